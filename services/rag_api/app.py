"""FastAPI application factory: auth, error mapping, health and readiness."""

from __future__ import annotations

import logging
import secrets
import threading
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from services.common.errors import TunestackError
from services.common.registry import BASE_MODELS
from services.rag_api import llm as llm_mod
from services.rag_api.context import RagContext
from services.rag_api.routes import admin, documents, jobs, llm, openai
from services.rag_api.settings import RagSettings

log = logging.getLogger("tunestack.rag_api")
_bearer = HTTPBearer(auto_error=False)


class BodyLimit:
    """Reject request bodies over a limit before they are parsed or spooled to disk."""

    def __init__(self, app: ASGIApp, limit_bytes: int) -> None:
        self.app = app
        self.limit = limit_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared and declared.isdigit() and int(declared) > self.limit:
            await _too_large(self.limit, send)
            return
        seen = 0
        refused = False

        async def counted() -> Any:
            nonlocal seen, refused
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    refused = True
                    raise _BodyTooLarge
            return msg

        try:
            await self.app(scope, counted, send)
        except _BodyTooLarge:
            if refused:
                await _too_large(self.limit, send)


class _BodyTooLarge(Exception):
    pass


async def _too_large(limit: int, send: Send) -> None:
    resp = JSONResponse(
        {
            "error": "TooLarge",
            "message": f"Request body exceeds {limit // 2**20} MB.",
            "hint": "Raise TUNESTACK_RAG_MAX_UPLOAD_MB or ingest large files with the CLI.",
        },
        status_code=413,
    )
    await resp({"type": "http"}, _noop_receive, send)


async def _noop_receive() -> Any:
    return {"type": "http.disconnect"}


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


def create_app(settings: RagSettings | None = None) -> FastAPI:
    s = settings or RagSettings()

    async def require_key(
        request: Request, cred: HTTPAuthorizationCredentials | None = Depends(_bearer)
    ) -> None:
        key = s.api_key_value
        if key is None:
            return
        given = cred.credentials if cred else ""
        if not secrets.compare_digest(given.encode(), key.encode()):
            raise HTTPException(
                401,
                "Missing or wrong API key (Authorization: Bearer <TUNESTACK_API_KEY>).",
                headers={"WWW-Authenticate": "Bearer"},
            )

    app = FastAPI(
        title="Tunestack RAG API",
        version="0.1.0",
        description="Document Q&A over your own collections; OpenAI-compatible /v1.",
    )
    ctx = RagContext.from_settings(s)
    _provision_bases(ctx)
    app.state.tunestack = ctx
    if s.warm_embedder:
        _warm(ctx)
    app.add_middleware(BodyLimit, limit_bytes=s.max_upload_mb * 2**20 + 2**20)
    auth = [Depends(require_key)]
    for module in (documents, openai, llm, admin, jobs):
        app.include_router(module.router, dependencies=auth)

    @app.exception_handler(TunestackError)
    async def _known(_: Request, e: TunestackError) -> JSONResponse:
        return JSONResponse(e.to_dict(), status_code=e.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        errs = [
            {"field": ".".join(str(p) for p in err.get("loc", ())), "problem": err.get("msg")}
            for err in e.errors()
        ]
        return JSONResponse(
            {"error": "BadInput", "message": "The request is not valid.", "details": errs},
            status_code=422,
        )

    @app.exception_handler(Exception)
    async def _unknown(_: Request, e: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(
            {
                "error": "InternalError",
                "message": f"{type(e).__name__}: {e}",
                "hint": "See the rag-api log (tunestack logs rag-api).",
            },
            status_code=500,
        )

    @app.get("/healthz", tags=["health"], summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        summary="Readiness: Chroma and the LLM answer",
        dependencies=auth,
    )
    async def readyz(request: Request) -> JSONResponse:
        ctx: RagContext = request.app.state.tunestack
        target = ctx.llm.target
        checks: dict[str, dict[str, Any]] = {
            "chroma": {"url": ctx.store.url, "ok": ctx.store.heartbeat()},
        }
        try:
            await llm_mod.list_models(target)
            checks["llm"] = {"url": target.base_url, "model": target.model, "ok": True}
        except Exception as e:
            checks["llm"] = {
                "url": target.base_url,
                "model": target.model,
                "ok": False,
                "error": type(e).__name__,
            }
        ok = all(c["ok"] for c in checks.values())
        return JSONResponse(
            {"status": "ready" if ok else "unavailable", "checks": checks},
            status_code=200 if ok else 503,
        )

    return app
