"""The bodies of the API's background jobs: an embedding evaluation, a RAG evaluation, an
ingest of uploaded files, a collection reindex, an LLM deploy to Ollama, and (in
services.rag_api.training_jobs) an embedder tune and an LLM training run.

Each is an adapter over the service function the CLI calls (embed_tuner.service,
rag_api.collections, converter.deploy): a report made from the UI is `tunestack embed
eval`'s, a deploy from the UI is `tunestack llm deploy --to ollama`'s. What a job adds is
progress reporting and the loaded embedders and LLM switch of the process that runs it.

A job is data: its kind and JSON arguments (`run_job`). That is what lets the same job run
on the API's own thread (local mode) or in a queue worker in another process or on
another machine (services.rag_api.job_worker), which rebuilds everything else from its
settings.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

from services.common.api_schemas import LlmSwitch, LlmTargetInfo, SwitchResponse
from services.common.errors import BadInput
from services.converter.deploy import DeploySpec, OllamaTarget, deploy
from services.embed_tuner.service import EvalRequest, evaluate_embedders
from services.rag_api.collections import IngestRequest, ingest_staged, reindex_collection
from services.rag_api.context import RagContext
from services.rag_api.jobs import Progress
from services.rag_api.llm_switch import switch_llm
from services.rag_api.rag_eval.records import RagEvalRequest
from services.rag_api.rag_eval.runner import RagBackend, run_rag_eval
from services.rag_api.training_jobs import run_train, run_tune


def run_eval(
    ctx: RagContext, path: Path, models: list[str], top_k: int, progress: Progress
) -> dict[str, Any]:
    req = EvalRequest(path, models, top_k, made_by="rag-api job")
    report = evaluate_embedders(ctx.settings, ctx.registry, ctx.pool, req, progress)
    return {
        "report": report.folder.name,
        "models": report.headline(),
        "error_reduction": report.error_reduction,
    }


def run_rag_eval_job(
    ctx: RagContext,
    loop: asyncio.AbstractEventLoop | None,
    req: RagEvalRequest,
    progress: Progress,
) -> dict[str, Any]:
    """`tunestack rag eval` as a job. Inside the API the answers are asked on the API's own
    event loop (`loop`), as chat requests are: LangChain's OpenAI client keeps one pooled
    HTTP client per server, bound to the loop that first used it. A queue worker has no
    loop of its own (None): its context lives for this one job, so a fresh loop is right."""
    coro = run_rag_eval(RagBackend(ctx), req, lambda d, t, m: progress(d, t, m))
    if loop is None:
        report = asyncio.run(coro)
    else:
        report = asyncio.run_coroutine_threadsafe(coro, loop).result()
    return {
        "report": report.folder.name,
        "top_k": report.top_k,
        "counts": report.counts,
        "notes": report.notes,
        "resumed_answers": report.resumed,
        "grid": [{**c.to_dict(), **report.summary[c.key]} for c in report.combos],
    }


def run_ingest(ctx: RagContext, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """A queued ingest of uploads staged by POST /v1/jobs/ingest (the report is /v1/ingest's)."""
    req = IngestRequest(
        [], args["collection"], args["embedder"], args["chunk_size"], args["chunk_overlap"]
    )
    progress(0, 0, f"ingesting {len(args['files'])} file(s) into '{req.collection}'")
    report = ingest_staged(
        ctx,
        args["staged"],
        args["files"],
        req,
        progress=lambda msg, d, t: progress(d, t, msg),
        waiting=lambda: progress(0, 0, f"waiting for other writes to '{req.collection}'"),
    )
    return report.to_dict()


def run_reindex(
    ctx: RagContext, collection: str, embedder: str, progress: Progress
) -> dict[str, Any]:
    progress(0, 0, f"loading {embedder} and embedding the stored chunks")
    build, n = reindex_collection(
        ctx,
        collection,
        embedder,
        batch=128,  # finer progress; one Chroma upsert per 128 chunks is still cheap
        progress=lambda d, t: progress(d, t, f"embedded {d}/{t} chunks with {embedder}"),
        waiting=lambda: progress(0, 0, f"waiting for other writes to '{collection}'"),
    )
    return {"collection": collection, "embedder": build.embedder, "chunks": n}


class InProcessSwitch:
    """The deploy's RAG API switch when the deploy runs inside the API: no HTTP hop, the
    same verified switch the /v1/admin/llm endpoint performs."""

    def __init__(self, ctx: RagContext) -> None:
        self.ctx = ctx

    def switch(self, model: str, base_url: str, run: str) -> SwitchResponse:
        return asyncio.run(switch_llm(self.ctx, LlmSwitch(model=model, base_url=base_url, run=run)))

    def restore(self, previous: LlmTargetInfo) -> None:
        asyncio.run(
            switch_llm(
                self.ctx,
                LlmSwitch(model=previous.model, base_url=previous.base_url, verify=False),
            )
        )


DEPLOY_STEPS = 5


def run_deploy(
    ctx: RagContext, run: str, quant: str, model: str, progress: Progress
) -> dict[str, Any]:
    """`tunestack llm deploy RUN --to ollama` inside the API (services.converter.deploy
    says what is checked when and what is undone if a step fails)."""
    host = ctx.settings.ollama_host
    step = 0

    def say(msg: str) -> None:
        nonlocal step
        step = min(step + 1, DEPLOY_STEPS - 1)
        progress(step, DEPLOY_STEPS, msg.strip())

    progress(0, DEPLOY_STEPS, f"deploying {run} ({quant}) to Ollama at {host}")
    res = deploy(
        ctx.registry,
        DeploySpec(run, quant, model, by="rag-api job"),
        OllamaTarget(host),
        InProcessSwitch(ctx),
        say,
    )
    progress(DEPLOY_STEPS, DEPLOY_STEPS, f"'{model}' is serving")
    assert res.switched is not None  # the in-process switch always switches or raises
    return {
        "run": run,
        "to": "ollama",
        "model": model,
        "quant": res.quant,
        "host": host,
        "base_url": res.installed.base_url,
        "verify": {"response": res.installed.response, "seconds": res.installed.seconds},
        "previous": res.switched.previous.model_dump(),
        "current": res.switched.current.model_dump(),
    }


def rag_eval_args(req: RagEvalRequest) -> dict[str, Any]:
    """The request as a job's JSON arguments (run_job rebuilds it)."""
    return {**dataclasses.asdict(req), "dataset": str(req.dataset)}


def run_job(
    ctx: RagContext,
    kind: str,
    args: dict[str, Any],
    progress: Progress,
    loop: asyncio.AbstractEventLoop | None = None,
) -> dict[str, Any]:
    """Run the job `kind` with its JSON `args` (what a route queued); `loop` is the API's
    event loop when it runs in the API process, None in a worker."""
    if kind == "eval":
        return run_eval(ctx, Path(args["dataset"]), args["models"], args["top_k"], progress)
    if kind == "rag-eval":
        req = RagEvalRequest(**{**args, "dataset": Path(args["dataset"])})
        return run_rag_eval_job(ctx, loop, req, progress)
    if kind == "ingest":
        return run_ingest(ctx, args, progress)
    if kind == "reindex":
        return run_reindex(ctx, args["collection"], args["embedder"], progress)
    if kind == "deploy":
        return run_deploy(ctx, args["run"], args["quant"], args["model"], progress)
    if kind == "tune":
        return run_tune(ctx, args, progress)
    if kind == "train":
        return run_train(ctx, args, progress)
    raise BadInput(f"Unknown job kind '{kind}'.", hint="Kinds: " + ", ".join(JOB_KINDS))


JOB_KINDS = ("eval", "rag-eval", "ingest", "reindex", "deploy", "tune", "train")
