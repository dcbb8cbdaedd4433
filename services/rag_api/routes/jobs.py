"""Job endpoints: start an evaluation (embedders, or the RAG answers) or a reindex, then
poll its progress (a deploy job is started by POST /v1/registry/models/llm/{name}/deploy
in routes.admin).

Inputs are checked before a job is queued (dataset exists, models are registered,
collection exists), so a typo is a 404/422 at once rather than a job that fails later.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Request

from services.common.api_schemas import (
    ERRORS,
    EvalJobRequest,
    JobInfo,
    JobsResponse,
    RagEvalJobRequest,
    ReindexJobRequest,
    error_responses,
)
from services.rag_api import job_bodies
from services.rag_api.context import RagContext
from services.rag_api.job_checks import (
    built_embedders,
    existing_collection,
    registered_embedders,
)
from services.rag_api.jobs import JobManager, Progress, app_manager
from services.rag_api.rag_eval.llms import resolve_llms
from services.rag_api.rag_eval.records import RagEvalRequest
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
    loop = asyncio.get_running_loop()

    def run(progress: Progress) -> dict[str, Any]:
        return job_bodies.run_rag_eval_job(ctx, loop, req, progress)

    params = {**req.params(), "llms": llms}
    again = req.command(f"TUNESTACK_HOME/datasets/{body.dataset}") + " --resume"
    key = "rag-eval:" + json.dumps(params, sort_keys=True)
    job = manager(request).submit("rag-eval", params, run, key=key, resume=again)
    return JobInfo(**job.info())


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
