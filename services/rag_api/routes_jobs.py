"""Job endpoints: start an evaluation or a reindex, then poll its progress (a deploy job
is started by POST /v1/registry/models/llm/{name}/deploy in routes_admin).

Inputs are checked before a job is queued (dataset exists, models are registered,
collection exists), so a typo is a 404/422 at once rather than a job that fails later.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from services.common.errors import NotFound
from services.rag_api import job_tasks
from services.rag_api.admin_schemas import (
    ERRORS,
    EvalJobRequest,
    JobInfo,
    JobsResponse,
    ReindexJobRequest,
)
from services.rag_api.jobs import JobManager, Progress, app_manager
from services.rag_api.routes_admin import resolve_dataset
from services.rag_api.state import AppState
from services.rag_api.store import validate_collection_name

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=ERRORS)


def state(request: Request) -> AppState:
    return request.app.state.tunestack


def manager(request: Request) -> JobManager:
    """The app's job manager, made on first use (app.py needs no extra wiring)."""
    return app_manager(request.app.state)


def _registered_embedders(st: AppState, names: list[str]) -> list[str]:
    have = st.registry.names("embedder")
    unique = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    missing = [n for n in unique if n not in have]
    if missing or not unique:
        raise NotFound(
            f"Not registered: {', '.join(missing) or '(no model given)'}.",
            hint="Registered embedders: " + ", ".join(have),
        )
    return unique


@router.post(
    "/eval",
    summary="Start an embedding evaluation (base vs tuned) that writes a report",
    response_model=JobInfo,
    status_code=202,
)
def start_eval(request: Request, body: EvalJobRequest) -> JobInfo:
    st = state(request)
    path = resolve_dataset(st, body.dataset)
    models = _registered_embedders(st, body.models)

    def run(progress: Progress) -> dict:
        return job_tasks.run_eval(st, path, models, body.top_k, progress)

    params = {"dataset": body.dataset, "models": models, "top_k": body.top_k}
    job = manager(request).submit("eval", params, run)
    return JobInfo(**job.info())


@router.post(
    "/reindex",
    summary="Start building a collection for another embedder (from stored chunks)",
    response_model=JobInfo,
    status_code=202,
)
def start_reindex(request: Request, body: ReindexJobRequest) -> JobInfo:
    st = state(request)
    validate_collection_name(body.collection)
    if not st.store.builds(body.collection):
        raise NotFound(
            f"Collection '{body.collection}' does not exist.",
            hint="GET /v1/collections lists them.",
        )
    (embedder,) = _registered_embedders(st, [body.embedder])

    def run(progress: Progress) -> dict:
        return job_tasks.run_reindex(st, body.collection, embedder, progress)

    params = {"collection": body.collection, "embedder": embedder}
    key = f"reindex:{body.collection}:{embedder}"
    job = manager(request).submit("reindex", params, run, key=key)
    return JobInfo(**job.info())


@router.get("", summary="Jobs of this API process, newest first", response_model=JobsResponse)
def list_jobs(request: Request) -> JobsResponse:
    return JobsResponse(jobs=[JobInfo(**j) for j in manager(request).list()])


@router.get("/{job_id}", summary="A job's status and progress", response_model=JobInfo)
def get_job(request: Request, job_id: str) -> JobInfo:
    return JobInfo(**manager(request).get(job_id))
