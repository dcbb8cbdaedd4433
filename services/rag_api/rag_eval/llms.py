"""LLM names of an evaluation, looked up on the configured LLM servers.

A name is a model some configured server lists at GET /v1/models (the RAG API's current
server first, then TUNESTACK_RAG_LLM_BASE_URL, Ollama's /v1, TUNESTACK_RAG_LLM_SERVERS):
a request never supplies a URL. The lookup matters beyond security: llama.cpp's server
answers any model name with the one model it has, so an unchecked name would silently
evaluate the wrong model under the asked-for label.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

import httpx

from services.common.errors import NotFound, ServiceUnavailable
from services.rag_api.llm import LlmTarget
from services.rag_api.llm_switch import target_for
from services.rag_api.settings import RagSettings

Lister = Callable[[LlmTarget], Awaitable[list[str]]]


async def served_ids(target: LlmTarget) -> list[str]:
    """Model ids the server lists; a busy server (a CPU llama.cpp answering someone) gets
    30 s, a dead one fails at connect."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0)) as c:
        r = await c.get(
            f"{target.base_url.rstrip('/')}/models",
            headers={"Authorization": f"Bearer {target.api_key}"},
        )
        r.raise_for_status()
        data = r.json().get("data", [])
    return [str(m["id"]) for m in data if isinstance(m, dict) and m.get("id")]


def _matches(name: str, ids: list[str]) -> str | None:
    """The listed id `name` refers to (Ollama lists NAME:latest for NAME)."""
    if name in ids:
        return name
    return f"{name}:latest" if f"{name}:latest" in ids else None


def _down(t: LlmTarget, why: str) -> ServiceUnavailable:
    return ServiceUnavailable(
        "llm",
        f"LLM '{t.model}' cannot be evaluated: the LLM server at {t.base_url} does not "
        f"answer ({why}).",
        hint="Start it (`tunestack up`), or point TUNESTACK_RAG_LLM_BASE_URL at a running "
        "OpenAI-compatible server, then run the evaluation again.",
    )


async def resolve_llms(
    s: RagSettings, current: LlmTarget, names: list[str], lister: Lister = served_ids
) -> dict[str, LlmTarget]:
    """name -> target for each name (none given: the current model). NotFound lists what
    the reachable servers serve; ServiceUnavailable ('llm', 503) names the model and the
    server when the one that would have to serve it is down."""
    if not names:
        try:  # reachable, whatever it lists (the API already asks it for this model)
            await lister(current)
        except Exception as e:
            raise _down(current, type(e).__name__) from None
        return {current.model: current}
    urls = list(dict.fromkeys([current.base_url.rstrip("/"), *s.llm_server_urls]))
    listed: dict[str, list[str]] = {}
    down: dict[str, str] = {}
    for url in urls:
        probe = (
            current if url == current.base_url.rstrip("/") else target_for(s, url, current.model)
        )
        try:
            listed[url] = await lister(probe)
        except Exception as e:  # any failure to list: that server cannot serve the name
            down[url] = type(e).__name__
    out: dict[str, LlmTarget] = {}
    for name in dict.fromkeys(names):
        found = next((u for u in urls if u in listed and _matches(name, listed[u])), None)
        if found is None:
            served = sorted({m for ids in listed.values() for m in ids})
            primary = current.base_url.rstrip("/")
            if primary in down:  # the server the API answers with is down: a 503 naming it
                raise ServiceUnavailable(
                    "llm",
                    f"LLM '{name}' cannot be evaluated: the LLM server at {primary} does not "
                    f"answer ({down[primary]}).",
                    hint="Start it (`tunestack up`), or point TUNESTACK_RAG_LLM_BASE_URL at a "
                    "running OpenAI-compatible server, then run the evaluation again"
                    + (f"; served elsewhere: {', '.join(served)}." if served else "."),
                )
            unreachable = f" Not reachable now: {', '.join(down)}." if down else ""
            raise NotFound(
                f"No configured LLM server serves a model named '{name}'.",
                hint=f"Served: {', '.join(served) or 'nothing'}.{unreachable} Deploy a model "
                "with `tunestack llm deploy`, or add its server to TUNESTACK_RAG_LLM_SERVERS.",
            )
        model = _matches(name, listed[found]) or name
        if found == current.base_url.rstrip("/"):
            out[name] = dataclasses.replace(current, model=model)
        else:
            out[name] = target_for(s, found, model)
    return out
