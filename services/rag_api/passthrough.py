"""Chat requests for a model that is not rag/<collection>: forwarded unchanged to the
configured LLM server, so this API can stand in for it in any OpenAI client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from services.common.errors import TunestackError
from services.rag_api import llm as llm_mod
from services.rag_api.llm import LlmTarget


@dataclass
class Forwarded:
    """Either a whole JSON answer (status, body) or a stream of raw SSE bytes."""

    status: int
    body: Any = None
    stream: AsyncIterator[bytes] | None = None


async def forward_chat(target: LlmTarget, payload: dict[str, Any], stream: bool) -> Forwarded:
    url = f"{target.base_url.rstrip('/')}/chat/completions"
    headers = {"Authorization": f"Bearer {target.api_key}"}
    client = httpx.AsyncClient(timeout=httpx.Timeout(target.timeout_s, connect=5.0))
    try:
        req = client.build_request("POST", url, json=payload, headers=headers)
        resp = await client.send(req, stream=True)
    except Exception as e:
        await client.aclose()
        raise llm_mod.translate(target, e) from e
    if not stream or resp.status_code != 200:
        data = await resp.aread()
        await resp.aclose()
        await client.aclose()
        try:
            return Forwarded(resp.status_code, json.loads(data))
        except ValueError:
            err = TunestackError(f"The LLM server answered {resp.status_code}: {data[:200]!r}")
            err.status_code = 502
            raise err from None

    async def relay() -> AsyncIterator[bytes]:
        try:
            async for chunk in resp.aiter_raw():
                yield chunk
        finally:
            await resp.aclose()
            await client.aclose()

    return Forwarded(200, stream=relay())
