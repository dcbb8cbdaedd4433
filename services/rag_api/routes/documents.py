"""Document endpoints: ingest uploads, retrieve, list/delete/reindex collections."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Path, Request, UploadFile

from services.common.api_schemas import (
    COLLECTION_NAME,
    CollectionDeleted,
    CollectionsResponse,
    IngestResponse,
    ReindexRequest,
    ReindexResponse,
    RelevanceRequest,
    RelevanceResponse,
    RetrieveRequest,
    RetrieveResponse,
    error_responses,
)
from services.common.errors import BadInput, disk_full_names
from services.rag_api import collections as svc
from services.rag_api import relevance
from services.rag_api.context import RagContext
from services.rag_api.registry_views import resolve_dataset

CollectionForm = Annotated[str, Form(json_schema_extra=COLLECTION_NAME)]
CollectionPath = Annotated[str, Path(json_schema_extra=COLLECTION_NAME)]
router = APIRouter(prefix="/v1", tags=["documents"], responses=error_responses(404, 409, 503))


def context(request: Request) -> RagContext:
    return request.app.state.tunestack


@router.post(
    "/ingest",
    summary="Upload files and ingest them into a collection",
    response_model=IngestResponse,
    responses=error_responses(507),
)
def ingest(
    request: Request,
    files: Annotated[list[UploadFile], File(description="Documents (.md .txt .pdf .docx .html)")],
    collection: CollectionForm,
    embedder: Annotated[str | None, Form()] = None,
    chunk_size: Annotated[int | None, Form(ge=16, le=8192)] = None,
    chunk_overlap: Annotated[int | None, Form(ge=0, le=4096)] = None,
) -> IngestResponse:
    ctx = context(request)
    req = svc.IngestRequest([], collection, embedder, chunk_size, chunk_overlap)
    uploads = [(f.filename or "upload", f.file) for f in files]
    with disk_full_names(ctx.uploads / collection, ctx.settings.home_dir):
        report = svc.ingest_uploads(ctx, uploads, req)
    return IngestResponse.model_validate(report.to_dict())


@router.post(
    "/retrieve", summary="Rank chunks of a collection for a query", response_model=RetrieveResponse
)
def retrieve(request: Request, body: RetrieveRequest) -> RetrieveResponse:
    res = context(request).retriever.retrieve(
        body.collection,
        body.query,
        mode=body.mode,
        top_k=body.top_k,
        embedder=body.embedder,
    )
    return RetrieveResponse.model_validate(res.to_dict())


@router.get(
    "/collections",
    summary="Collections with the embedders they are built for",
    response_model=CollectionsResponse,
)
def collections(request: Request) -> CollectionsResponse:
    return CollectionsResponse(collections=svc.list_collections(context(request)))


@router.delete(
    "/collections/{name}",
    summary="Delete a collection (every embedder's build)",
    response_model=CollectionDeleted,
)
def delete_collection(request: Request, name: CollectionPath) -> CollectionDeleted:
    return CollectionDeleted(deleted=name, builds=svc.delete_collection(context(request), name))


@router.post(
    "/collections/{name}/reindex",
    summary="Build a collection for another embedder",
    response_model=ReindexResponse,
)
def reindex_collection(
    request: Request, name: CollectionPath, body: ReindexRequest
) -> ReindexResponse:
    build, n = svc.reindex_collection(context(request), name, body.embedder)
    return ReindexResponse(collection=name, embedder=build.embedder, chunks=n)


@router.post(
    "/collections/{name}/relevance",
    summary="Calibrate (or turn off) the relevance gate of a collection's build",
    response_model=RelevanceResponse,
)
def calibrate_relevance(
    request: Request, name: CollectionPath, body: RelevanceRequest
) -> RelevanceResponse:
    """What `tunestack rag calibrate` does: the threshold below which `false_abstention` of
    the dataset's answerable questions' best passages fall, stored on the build."""
    ctx = context(request)
    if body.off == (body.dataset is not None):
        raise BadInput("Give a dataset to calibrate, or off: true to turn the gate off.")
    if body.dataset is None:
        result = relevance.clear(ctx, name, body.embedder)
    else:
        path = resolve_dataset(ctx, body.dataset, suffixes=(".json", ".jsonl"))
        result = relevance.calibrate(
            ctx,
            name,
            path,
            embedder=body.embedder,
            false_abstention=body.false_abstention,
            dataset_name=body.dataset,
        )
    return RelevanceResponse.model_validate(result.to_dict())
