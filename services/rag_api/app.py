"""FastAPI application factory: the guard, error shapes, routes and the job manager.

Who may call what is decided in services.rag_api.security (before any body is read);
every error leaves in one shape through services.rag_api.http_errors.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.common.api_schemas import error_responses
from services.common.auth import Authenticator, KeyStore
from services.common.errors import TunestackError
from services.common.registry import BASE_MODELS
from services.rag_api import http_errors
from services.rag_api.body_limit import BodyLimit
from services.rag_api.context import RagContext
from services.rag_api.job_bodies import run_job
from services.rag_api.jobs import JobManager, JobQueue
from services.rag_api.routes import admin, documents, health, jobs, llm, openai
from services.rag_api.security import (
    Guard,
    GuardConfig,
    check_exposure,
    check_route_roles,
    document_guard,
)
from services.rag_api.settings import RagSettings

log = logging.getLogger("tunestack.rag_api")


def _provision_bases(ctx: RagContext) -> None:
    """Register the bundled base models whose packages are installed, once, at start: a
    request only ever looks models up (it never provisions, installs or downloads)."""
    for name, base in BASE_MODELS.items():
        if base.locate() is None:
            continue
        try:
            ctx.registry.ensure(base.kind, name)
        except TunestackError as e:  # reported again by the request that names it
            log.warning("could not register base model %s: %s", name, e.message)


def _warm(ctx: RagContext) -> None:
    """Load the default embedder off the request path: a cold load takes seconds (torch,
    weights), which would otherwise land on whoever asks first. Failures are only logged:
    the first request that needs the model reports them properly."""

    def load() -> None:
        try:
            ctx.pool.get(ctx.settings.default_embedder)
        except Exception as e:  # reported again by the request that needs it
            log.warning("embedder warm-up failed: %s", e)

    threading.Thread(target=load, name="embedder-warmup", daemon=True).start()


def authenticator(s: RagSettings) -> Authenticator:
    """Keys from TUNESTACK_HOME/keys.json and TUNESTACK_API_KEY; refuses to serve beyond
    loopback without any (a TunestackError the entrypoint prints with its hint)."""
    auth = Authenticator(KeyStore(s.home_dir), s.api_key_configured)
    check_exposure(s.host, s.exposed_on, auth)
    return auth


def job_queue(s: RagSettings, ctx: RagContext) -> JobQueue:
    """Jobs on the queue's workers when TUNESTACK_QUEUE_URL names one (any replica of the
    API sees every job there), else on this process's own job thread."""
    if s.queue_url:
        from services.rag_api.job_queue import RedisJobs  # redis + rq: only with a queue

        return RedisJobs.from_settings(s)
    return JobManager(
        max_active=s.max_jobs,
        state_dir=s.home_dir / "run" / "jobs",
        home=s.home_dir,
        runner=lambda kind, args, progress, loop: run_job(ctx, kind, args, progress, loop),
    )


def create_app(settings: RagSettings | None = None) -> FastAPI:
    s = settings or RagSettings()
    auth = authenticator(s)
    ctx = RagContext.from_settings(s)
    manager = job_queue(s, ctx)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        manager.shutdown()

    app = FastAPI(
        title="Tunestack RAG API",
        version="0.1.0",
        description="Document Q&A over your own collections; OpenAI-compatible /v1. "
        "Send `Authorization: Bearer <key>` (`tunestack keys create`).",
        lifespan=lifespan,
    )
    _provision_bases(ctx)
    app.state.tunestack = ctx
    app.state.tunestack_jobs = manager
    if s.warm_embedder:
        _warm(ctx)
    for module in (health, documents, llm, admin, jobs):
        app.include_router(module.router)
    app.include_router(openai.router, responses=error_responses(404, 409, 502, 503, 504))
    schema = app.openapi()  # built once and cached: what GET /openapi.json serves
    check_route_roles(schema["paths"])
    document_guard(schema)
    http_errors.install(app, roots=(ctx.uploads, s.home_dir))
    # added last = outermost: the guard answers before the body limit reads anything
    app.add_middleware(BodyLimit, limit_bytes=s.max_upload_mb * 2**20 + 2**20)
    app.add_middleware(
        Guard,
        auth=auth,
        config=GuardConfig(
            allowed_hosts=s.allowed_host_names,
            allowed_origins=s.allowed_origin_list,
            rate_per_minute=s.rate_per_minute,
            max_concurrent=s.max_concurrent,
            failed_auth_per_minute=s.failed_auth_per_minute,
        ),
    )
    return app
