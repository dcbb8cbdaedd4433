"""Job endpoints: start an evaluation or a reindex, then poll its progress (a deploy job
is started by POST /v1/registry/models/llm/{name}/deploy in routes.admin).

Inputs are checked before a job is queued (dataset exists, models are registered,
collection exists), so a typo is a 404/422 at once rather than a job that fails later.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from services.common.api_schemas import (
    ERRORS,
    EvalJobRequest,
    JobInfo,
    JobsResponse,
    ReindexJobRequest,
)
from services.rag_api import job_bodies
from services.rag_api.context import RagContext
from services.rag_api.job_checks import existing_collection, registered_embedders
from services.rag_api.jobs import JobManager, Progress, app_manager
from services.rag_api.registry_views import resolve_dataset

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=ERRORS)


def context(request: Request) -> RagContext:
    return request.app.state.tunestack


def manager(request: Request) -> JobManager:
    return app_manager(request.app.state)


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

    def run(progress: Progress) -> dict[str, Any]:
        return job_bodies.run_eval(ctx, path, models, body.top_k, progress)

    params = {"dataset": body.dataset, "models": models, "top_k": body.top_k}
    again = " ".join(
        ["tunestack embed eval --dataset", body.dataset, *(f"--model {m}" for m in models)]
    )
    job = manager(request).submit("eval", params, run, resume=f"{again} --top-k {body.top_k}")
    return JobInfo(**job.info())


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

    def run(progress: Progress) -> dict[str, Any]:
        return job_bodies.run_reindex(ctx, body.collection, embedder, progress)

    params = {"collection": body.collection, "embedder": embedder}
    key = f"reindex:{body.collection}:{embedder}"
    again = f"tunestack reindex {body.collection} --embedder {embedder}"
    return JobInfo(**manager(request).submit("reindex", params, run, key=key, resume=again).info())


@router.get("", summary="Jobs of this API process, newest first", response_model=JobsResponse)
def list_jobs(request: Request) -> JobsResponse:
    return JobsResponse(jobs=[JobInfo(**j) for j in manager(request).list()])


@router.get("/{job_id}", summary="A job's status and progress", response_model=JobInfo)
def get_job(request: Request, job_id: str) -> JobInfo:
    return JobInfo(**manager(request).get(job_id))
