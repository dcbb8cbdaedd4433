"""Switch the RAG API's LLM at run time: `tunestack llm deploy` calls this after the new
model answers, so collections, embedders and open connections stay as they are.

The new target is verified (its server lists the model, or answers a one-token chat)
before LlmHolder swaps it in; a request already running keeps the target it started with.
If verification fails nothing changes and the previous model keeps serving. The target is
also written to TUNESTACK_HOME/run/llm-deployment.json so a restarted API that talks to the
same server comes back on the deployed model (services.rag_api.state reads it).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from services.common import atomic
from services.common.errors import ServiceUnavailable
from services.rag_api.llm import LlmTarget
from services.rag_api.state import AppState

router = APIRouter(prefix="/v1/admin", tags=["admin"])
DEPLOYMENT_FILE = ("run", "llm-deployment.json")


class LlmSwitch(BaseModel):
    model: str = Field(min_length=1, description="Model name the LLM server serves.")
    base_url: str | None = Field(
        default=None, description="OpenAI-compatible /v1 URL; default: the current one."
    )
    api_key: str | None = None
    verify: bool = Field(default=True, description="Check the model answers before switching.")
    run: str | None = Field(default=None, description="Registry run it was deployed from.")


def deployment_path(home: Path) -> Path:
    return home.joinpath(*DEPLOYMENT_FILE)


def _public(t: LlmTarget) -> dict[str, Any]:
    return {"base_url": t.base_url, "model": t.model}


async def verify_target(t: LlmTarget) -> None:
    """The server lists the model, or (servers that list one alias) answers a 1-token chat."""
    headers = {"Authorization": f"Bearer {t.api_key}"}
    base = t.base_url.rstrip("/")
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(t.timeout_s, connect=5.0)) as c:
            r = await c.get(f"{base}/models", headers=headers)
            r.raise_for_status()
            ids = [str(m.get("id")) for m in r.json().get("data", []) if isinstance(m, dict)]
            if t.model in ids:
                return
            r = await c.post(
                f"{base}/chat/completions",
                headers=headers,
                json={
                    "model": t.model,
                    "messages": [{"role": "user", "content": "Hi"}],
                    "max_tokens": 1,
                },
            )
            r.raise_for_status()
            if r.json().get("model") not in (t.model, None) and t.model not in ids:
                raise ValueError(f"server answered as {r.json().get('model')!r}, lists {ids}")
    except (httpx.HTTPError, ValueError) as e:
        raise ServiceUnavailable(
            "llm",
            f"Model '{t.model}' does not answer at {t.base_url} ({type(e).__name__}: {e}); "
            "the API keeps its current model.",
            hint="Deploy the model to that server first (tunestack llm deploy RUN).",
        ) from e


@router.get("/llm", summary="The LLM the RAG chain uses now")
async def current_llm(request: Request) -> dict[str, Any]:
    st: AppState = request.app.state.tunestack
    return _public(st.llm.target)


@router.post("/llm", summary="Switch the RAG chain's LLM atomically (verified first)")
async def switch_llm(request: Request, body: LlmSwitch) -> dict[str, Any]:
    return await switch_to(request.app.state.tunestack, body)


async def switch_to(st: AppState, body: LlmSwitch) -> dict[str, Any]:
    """Verify, swap and persist; also what the API's own deploy job calls."""
    cur = st.llm.target
    new = LlmTarget(
        base_url=body.base_url or cur.base_url,
        model=body.model,
        api_key=body.api_key if body.api_key is not None else cur.api_key,
        timeout_s=cur.timeout_s,
    )
    if body.verify:
        await verify_target(new)
    old = st.llm.switch(new)
    atomic.write_text(
        deployment_path(st.settings.home_dir),
        json.dumps(
            {**_public(new), "run": body.run, "switched": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        ),
    )
    return {"previous": _public(old), "current": _public(new)}
