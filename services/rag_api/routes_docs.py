"""Document endpoints: ingest uploads, retrieve, list/delete/reindex collections."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile

from services.common.errors import BadInput
from services.rag_api.ingest import Ingestor
from services.rag_api.reindex import reindex
from services.rag_api.schemas import ReindexRequest, RetrieveRequest
from services.rag_api.state import AppState
from services.rag_api.store import validate_collection_name
from services.rag_api.uploads import save_upload

router = APIRouter(prefix="/v1", tags=["documents"])


def state(request: Request) -> AppState:
    return request.app.state.tunestack


@router.post("/ingest", summary="Upload files and ingest them into a collection")
def ingest(
    request: Request,
    files: Annotated[list[UploadFile], File(description="Documents (.md .txt .pdf .docx .html)")],
    collection: Annotated[str, Form()],
    embedder: Annotated[str | None, Form()] = None,
    chunk_size: Annotated[int | None, Form(ge=16, le=8192)] = None,
    chunk_overlap: Annotated[int | None, Form(ge=0, le=4096)] = None,
) -> dict[str, Any]:
    st = state(request)
    s = st.settings
    validate_collection_name(collection)
    if not files:
        raise BadInput("No files were uploaded.", hint="Send one or more 'files' parts.")
    dest = s.home_dir / "uploads" / collection
    saved = [
        save_upload(f.file, f.filename or "upload", dest, s.max_upload_mb * 2**20) for f in files
    ]
    emb = st.pool.get(embedder or s.default_embedder)
    ingestor = Ingestor(
        st.store,
        emb,
        chunk_size=chunk_size or s.chunk_size,
        chunk_overlap=s.chunk_overlap if chunk_overlap is None else chunk_overlap,
        max_file_bytes=s.max_file_mb * 2**20,
    )
    with st.ingest_locks[collection]:
        report = ingestor.ingest(saved, collection)
    out = report.to_dict()
    for f in out["files"]:  # show upload names, not server paths
        f["path"] = f["path"].rsplit("/", 1)[-1]
    return out


@router.post("/retrieve", summary="Rank chunks of a collection for a query")
def retrieve(request: Request, body: RetrieveRequest) -> dict[str, Any]:
    st = state(request)
    res = st.retriever.retrieve(
        body.collection, body.query, mode=body.mode, top_k=body.top_k, embedder=body.embedder
    )
    return res.to_dict()


@router.get("/collections", summary="Collections with the embedders they are built for")
def collections(request: Request) -> dict[str, Any]:
    st = state(request)
    out: dict[str, dict[str, Any]] = {}
    for b in st.store.builds():
        c = out.setdefault(b.name, {"name": b.name, "builds": []})
        c["builds"].append(
            {
                "embedder": b.embedder,
                "embedder_fp": b.embedder_fp,
                "chunks": st.store.count(b),
                "created": b.metadata.get("created"),
            }
        )
    return {"collections": list(out.values())}


@router.delete("/collections/{name}", summary="Delete a collection (every embedder's build)")
def delete_collection(request: Request, name: str) -> dict[str, Any]:
    st = state(request)
    validate_collection_name(name)
    n = st.store.delete(name)
    return {"deleted": name, "builds": n}


@router.post("/collections/{name}/reindex", summary="Build a collection for another embedder")
def reindex_collection(request: Request, name: str, body: ReindexRequest) -> dict[str, Any]:
    st = state(request)
    emb = st.pool.get(body.embedder)
    with st.ingest_locks[name]:
        build, n = reindex(st.store, name, emb, st.settings.default_embedder)
    return {"collection": name, "embedder": build.embedder, "chunks": n}
