"""Switch the RAG chain's LLM at run time: after `tunestack llm deploy`, collections,
embedders and open connections stay as they are.

The new target is verified (its server lists the model, or answers a one-token chat)
before LlmHolder swaps it in; a request already running keeps the target it started with.
If verification fails nothing changes and the previous model keeps serving. The target is
also written to TUNESTACK_HOME/run/llm-deployment.json so a restarted API comes back on
the deployed model when its server is still one of the configured ones
(context.deployed_target reads it).
"""

from __future__ import annotations

import json

import httpx

from services.common import atomic
from services.common.api_schemas import LlmSwitch, LlmTargetInfo, SwitchResponse
from services.common.errors import BadInput, NotFound, ServiceUnavailable
from services.common.locks import file_lock, lock_path
from services.common.records import now
from services.rag_api.context import RagContext, deployment_path, llm_target
from services.rag_api.llm import LlmTarget
from services.rag_api.settings import RagSettings


def public(t: LlmTarget) -> LlmTargetInfo:
    return LlmTargetInfo(base_url=t.base_url, model=t.model)


def target_for(s: RagSettings, base_url: str, model: str) -> LlmTarget:
    """A target on one of the configured servers, or a refusal.

    The switch never goes to a URL a request made up: that would let a caller point the
    RAG chain (questions and private chunks) at any host, probe internal ports through our
    error messages, and receive the configured upstream key. The configured key is sent
    only to the server it was configured for.
    """
    url = base_url.rstrip("/")
    allowed = s.llm_server_urls
    if url not in allowed:
        raise BadInput(
            f"'{url}' is not one of this API's LLM servers.",
            hint="Switch among: " + ", ".join(allowed) + ". An admin adds a server with "
            "TUNESTACK_RAG_LLM_SERVERS and restarts the API.",
        )
    return llm_target(s, url, model)


async def verify_target(t: LlmTarget) -> None:
    """The server lists the model, or (servers that list one alias) answers a 1-token chat.

    A server that answers but does not serve the model is the caller's mistake (404, with
    what it serves); one that does not answer is ours to report as down (503)."""
    headers = {"Authorization": f"Bearer {t.api_key}"}
    base = t.base_url.rstrip("/")
    ids: list[str] = []
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
            if r.status_code not in (400, 404):
                r.raise_for_status()
                if r.json().get("model") in (t.model, None):
                    return
    except (httpx.HTTPError, ValueError) as e:
        raise ServiceUnavailable(
            "llm",
            f"Model '{t.model}' does not answer at {t.base_url} ({type(e).__name__}); "
            "the API keeps its current model.",
            hint="Start that server, or deploy the model to it (tunestack llm deploy RUN).",
        ) from e
    raise NotFound(
        f"The server at {t.base_url} does not serve '{t.model}'; the API keeps its current model.",
        hint="It serves: "
        + (", ".join(ids) or "(none listed)")
        + ". Deploy the model there first (tunestack llm deploy RUN).",
    )


async def switch_llm(ctx: RagContext, req: LlmSwitch) -> SwitchResponse:
    """Verify, swap and persist (the record under its lock: two deploys never interleave)."""
    cur = ctx.llm.target
    new = target_for(ctx.settings, req.base_url or cur.base_url, req.model)
    if req.verify:
        await verify_target(new)
    home = ctx.settings.home_dir
    what = "The deployment"
    record = file_lock(lock_path(home, "record", "llm-deployment"), timeout=30, what=what)
    with ctx.shared_lock("llm-deployment", record, timeout=30, what=what):
        old = ctx.llm.switch(new)
        atomic.write_text(
            deployment_path(home),
            json.dumps(
                {
                    **public(new).model_dump(),
                    "configured": ctx.settings.llm_base_url.rstrip("/"),
                    "run": req.run,
                    "switched": now(),
                }
            ),
        )
    return SwitchResponse(previous=public(old), current=public(new))
