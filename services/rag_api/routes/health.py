"""Liveness (public), readiness and "who am I" (any key)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.common.api_schemas import Readiness, WhoAmI
from services.common.auth import OPEN, Identity
from services.rag_api import llm as llm_mod
from services.rag_api.context import RagContext

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers (no key needed)")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: the vector store, the LLM and (when jobs are queued) Redis answer",
    responses={
        200: {"model": Readiness, "description": "Both answer."},
        503: {"model": Readiness, "description": "One is down; `checks` says which."},
    },
)
async def readyz(request: Request) -> JSONResponse:
    ctx: RagContext = request.app.state.tunestack
    target = ctx.llm.target
    checks: dict[str, dict[str, Any]] = {
        ctx.store.engine: {"url": ctx.store.url, "ok": ctx.store.heartbeat()},
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
    queue_ready = getattr(request.app.state.tunestack_jobs, "ready", None)
    if queue_ready is not None:  # jobs on a queue: Redis must answer (workers are counted)
        checks["queue"] = await asyncio.to_thread(queue_ready)
    ok = all(c["ok"] for c in checks.values())
    return JSONResponse(
        {"status": "ready" if ok else "unavailable", "checks": checks},
        status_code=200 if ok else 503,
    )


@router.get("/v1/whoami", summary="The key this request was made with, and its role")
def whoami(request: Request) -> WhoAmI:
    who: Identity = request.scope.get("state", {}).get("identity", OPEN)
    return WhoAmI(id=who.id, name=who.name, role=who.role, auth=who.via != "open")
