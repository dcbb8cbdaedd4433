"""Job endpoints: start an evaluation (embedders, or the RAG answers), an ingest, a
reindex, an embedder tune or an LLM training run, then poll its progress (a deploy job is started by
POST /v1/registry/models/llm/{name}/deploy in routes.admin).

Inputs are checked before a job is queued (dataset exists, models are registered,
collection exists), so a typo is a 404/422 at once rather than a job that fails later.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile

from services.common.api_schemas import (
    COLLECTION_NAME,
    ERRORS,
    EvalJobRequest,
    JobInfo,
    JobsResponse,
    RagEvalJobRequest,
    ReindexJobRequest,
    TrainJobRequest,
    TuneJobRequest,
    error_responses,
)
from services.common.errors import disk_full_names
from services.rag_api import job_bodies
from services.rag_api.collections import IngestRequest, stage_uploads
from services.rag_api.context import RagContext
from services.rag_api.job_checks import (
    built_embedders,
    existing_collection,
    registered_embedders,
)
from services.rag_api.jobs import JobQueue, JobSpec, app_jobs
from services.rag_api.rag_eval.llms import resolve_llms
from services.rag_api.rag_eval.records import RagEvalRequest
from services.rag_api.registry_views import resolve_dataset
from services.rag_api.training_jobs import check_train, check_tune, corpus_file

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=ERRORS)


def context(request: Request) -> RagContext:
    return request.app.state.tunestack


def queue(request: Request) -> JobQueue:
    return app_jobs(request.app.state)


@router.post(
    "/eval",
    summary="Start an embedding evaluation (base vs tuned) that writes a report",
    response_model=JobInfo,
    status_code=202,
)
def start_eval(request: Request, body: EvalJobRequest) -> JobInfo:
    ctx = context(request)
    path = resolve_dataset(ctx, body.dataset)
    models = registered_embedders(ctx, body.models)

    params = {"dataset": body.dataset, "models": models, "top_k": body.top_k}
    again = " ".join(
        ["tunestack embed eval --dataset", body.dataset, *(f"--model {m}" for m in models)]
    )
    spec = JobSpec(
        "eval",
        params,
        args={**params, "dataset": str(path)},
        resume=f"{again} --top-k {body.top_k}",
    )
    return JobInfo(**queue(request).enqueue(spec))


@router.post(
    "/rag-eval",
    summary="Start a RAG evaluation (LLM x embedder x mode on a QA set) that writes a report",
    response_model=JobInfo,
    status_code=202,
    responses=error_responses(409),
)
async def start_rag_eval(request: Request, body: RagEvalJobRequest) -> JobInfo:
    """What `tunestack rag eval` does, as a job. The dataset must be a registered one
    (GET /v1/datasets); the LLMs must be served by a configured LLM server (503 naming it
    when that server is down); the collection must be built for each embedder."""
    ctx = context(request)
    path = resolve_dataset(ctx, body.dataset, suffixes=(".json", ".jsonl"))
    llms = list(await resolve_llms(ctx.settings, ctx.llm.target, body.llms))
    if body.judge:
        await resolve_llms(ctx.settings, ctx.llm.target, [body.judge])
    embedders = await asyncio.to_thread(
        built_embedders, ctx, body.collection, registered(ctx, body.embedders)
    )
    req = RagEvalRequest(
        dataset=path,
        collection=body.collection,
        dataset_name=body.dataset,
        llms=llms if body.llms else [],
        embedders=embedders,
        modes=list(dict.fromkeys(body.modes)),
        top_k=body.top_k,
        max_tokens=body.max_tokens,
        limit=body.limit,
        unanswerable=body.unanswerable,
        resume=body.resume,
        judge=body.judge,
        made_by="rag-api job",
    )
    params = {**req.params(), "llms": llms}
    again = req.command(f"TUNESTACK_HOME/datasets/{body.dataset}") + " --resume"
    key = "rag-eval:" + json.dumps(params, sort_keys=True)
    spec = JobSpec("rag-eval", params, job_bodies.rag_eval_args(req), key=key, resume=again)
    return JobInfo(**queue(request).enqueue(spec))


def registered(ctx: RagContext, names: list[str]) -> list[str]:
    return registered_embedders(ctx, names) if names else []


@router.post(
    "/reindex",
    summary="Start building a collection for another embedder (from stored chunks)",
    response_model=JobInfo,
    status_code=202,
)
def start_reindex(request: Request, body: ReindexJobRequest) -> JobInfo:
    ctx = context(request)
    existing_collection(ctx, body.collection)
    (embedder,) = registered_embedders(ctx, [body.embedder])

    params = {"collection": body.collection, "embedder": embedder}
    key = f"reindex:{body.collection}:{embedder}"
    again = f"tunestack reindex {body.collection} --embedder {embedder}"
    return JobInfo(**queue(request).enqueue(JobSpec("reindex", params, params, key, again)))


@router.post(
    "/ingest",
    summary="Upload files and ingest them as a job (what POST /v1/ingest does, queued)",
    response_model=JobInfo,
    status_code=202,
    responses=error_responses(507),
)
def start_ingest(
    request: Request,
    files: Annotated[list[UploadFile], File(description="Documents (.md .txt .pdf .docx .html)")],
    collection: Annotated[str, Form(json_schema_extra=COLLECTION_NAME)],
    embedder: Annotated[str | None, Form()] = None,
    chunk_size: Annotated[int | None, Form(ge=16, le=8192)] = None,
    chunk_overlap: Annotated[int | None, Form(ge=0, le=4096)] = None,
) -> JobInfo:
    """For large uploads and for API replicas with queue workers: the files are saved at
    once and a worker ingests them (the job's result is /v1/ingest's report); the request
    does not wait for embedding."""
    ctx = context(request)
    req = IngestRequest([], collection, embedder, chunk_size, chunk_overlap)
    uploads = [(f.filename or "upload", f.file) for f in files]
    with disk_full_names(ctx.uploads, ctx.settings.home_dir):
        staged, names = stage_uploads(ctx, uploads, req)
    params = {"collection": collection, "files": names, "embedder": embedder}
    args = {**params, "staged": staged, "chunk_size": chunk_size, "chunk_overlap": chunk_overlap}
    again = f"tunestack ingest TUNESTACK_HOME/uploads/{collection} --collection {collection}"
    return JobInfo(**queue(request).enqueue(JobSpec("ingest", params, args, resume=again)))


@router.post(
    "/tune",
    summary="Start tuning an embedder on a collection's chunks or a dataset's queries",
    response_model=JobInfo,
    status_code=202,
    responses=error_responses(409),
)
def start_tune(request: Request, body: TuneJobRequest) -> JobInfo:
    """What `tunestack embed tune` does, as a job: on a collection, pseudo-queries are made
    from its chunks offline and, when tuning ends, the collection is built for the tuned
    embedder (reindex: false skips that). The result has the tuned model's metrics on the
    held-out queries. A second request for the same name while one runs is the same job."""
    ctx = context(request)

    def resolve(name: str) -> Path:
        return resolve_dataset(ctx, name, suffixes=(".json", ".jsonl"))

    paths = check_tune(ctx, body, resolve)
    params = body.model_dump(exclude_defaults=True) | {"name": body.name, "base": body.base}
    args = body.model_dump() | paths
    corpus = corpus_file(ctx.registry, body.name).relative_to(ctx.registry.home)
    source = (
        f"--pairs TUNESTACK_HOME/datasets/{body.dataset}"
        if body.dataset
        else f"--corpus TUNESTACK_HOME/{corpus}"
    )
    again = f"tunestack embed tune --base {body.base} --name {body.name} {source}"
    spec = JobSpec("tune", params, args, key=f"tune:{body.name}", resume=again)
    return JobInfo(**queue(request).enqueue(spec))


@router.post(
    "/train",
    summary="Start training an LLM (LoRA, full, DPO/KTO) from LLaMA-Factory keys",
    response_model=JobInfo,
    status_code=202,
    responses=error_responses(409),
)
def start_train(request: Request, body: TrainJobRequest) -> JobInfo:
    """What `tunestack llm train` does, as a job, on the LLaMA-Factory datasets in
    TUNESTACK_HOME/llm-data. The config is checked as the CLI checks it before anything is
    queued (unknown keys with the closest known one, datasets, base model). Progress is
    the training step, loss and ETA; a job run again after its worker died resumes from
    the last checkpoint (save_steps)."""
    ctx = context(request)
    config = check_train(ctx, body)
    again = f"tunestack llm train TUNESTACK_HOME/jobs/train/{body.run_name}.yaml"
    spec = JobSpec(
        "train",
        {"run_name": body.run_name, "config": config},
        {"config": config},
        key=f"train:{body.run_name}",
        resume=again,
    )
    return JobInfo(**queue(request).enqueue(spec))


@router.get(
    "",
    summary="Jobs, newest first (this API's, or with a queue every replica's)",
    response_model=JobsResponse,
)
def list_jobs(request: Request) -> JobsResponse:
    return JobsResponse(jobs=[JobInfo(**j) for j in queue(request).list()])


@router.get("/{job_id}", summary="A job's status and progress", response_model=JobInfo)
def get_job(request: Request, job_id: str) -> JobInfo:
    return JobInfo(**queue(request).get(job_id))
