"""Switch the RAG chain's LLM at run time: after `tunestack llm deploy`, collections,
embedders and open connections stay as they are.

The new target is verified (its server lists the model, or answers a one-token chat)
before LlmHolder swaps it in; a request already running keeps the target it started with.
If verification fails nothing changes and the previous model keeps serving. The target is
also written to TUNESTACK_HOME/run/llm-deployment.json so a restarted API that talks to the
same server comes back on the deployed model (context.deployed_model reads it).
"""

from __future__ import annotations

import json

import httpx

from services.common import atomic
from services.common.api_schemas import LlmSwitch, LlmTargetInfo, SwitchResponse
from services.common.errors import ServiceUnavailable
from services.common.records import now
from services.rag_api.context import RagContext, deployment_path
from services.rag_api.llm import LlmTarget


def public(t: LlmTarget) -> LlmTargetInfo:
    return LlmTargetInfo(base_url=t.base_url, model=t.model)


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


async def switch_llm(ctx: RagContext, req: LlmSwitch) -> SwitchResponse:
    """Verify, swap and persist."""
    cur = ctx.llm.target
    new = LlmTarget(
        base_url=req.base_url or cur.base_url,
        model=req.model,
        api_key=req.api_key if req.api_key is not None else cur.api_key,
        timeout_s=cur.timeout_s,
    )
    if req.verify:
        await verify_target(new)
    old = ctx.llm.switch(new)
    atomic.write_text(
        deployment_path(ctx.settings.home_dir),
        json.dumps({**public(new).model_dump(), "run": req.run, "switched": now()}),
    )
    return SwitchResponse(previous=public(old), current=public(new))
