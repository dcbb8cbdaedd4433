"""Chat requests for a model that is not rag/<collection>: forwarded unchanged to the
configured LLM server, so this API can stand in for it in any OpenAI client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.concurrency import run_in_threadpool

from services.common.errors import ServiceUnavailable, TunestackError
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
    # a client's SSL context (~35 ms) and the body's JSON are CPU work: off the event loop
    timeout = httpx.Timeout(target.timeout_s, connect=5.0)
    client = await run_in_threadpool(httpx.AsyncClient, timeout=timeout)
    try:
        req = await run_in_threadpool(
            client.build_request, "POST", url, json=_flat_text(payload), headers=headers
        )
        resp = await client.send(req, stream=True)
    except Exception as e:
        await client.aclose()
        raise llm_mod.translate(target, e) from e
    if not stream or resp.status_code != 200:
        data = await resp.aread()
        await resp.aclose()
        await client.aclose()
        if resp.status_code >= 400:
            raise _refused(resp.status_code, data)
        try:
            return Forwarded(resp.status_code, json.loads(data))
        except ValueError:
            err = TunestackError(f"The LLM server answered {resp.status_code}: {data[:200]!r}")
            err.status_code = 502
            raise err from None

    async def relay() -> AsyncIterator[bytes]:
        """The server's SSE bytes as they come; if it dies mid-stream (the status is
        already sent), an `error` event and [DONE], as a RAG stream ends, not a cut."""
        ended = True
        try:
            async for chunk in resp.aiter_raw():
                ended = chunk.endswith(b"\n\n")
                yield chunk
        except Exception as e:
            err = llm_mod.translate(target, e)
            if isinstance(e, httpx.TransportError) and not isinstance(err, ServiceUnavailable):
                err = llm_mod.down(target, e)  # the server went away mid-answer
            event = {"error": {**err.to_dict(), "code": err.status_code}}
            yield (b"" if ended else b"\n\n") + f"data: {json.dumps(event)}\n\n".encode()
            yield b"data: [DONE]\n\n"
        finally:
            await resp.aclose()
            await client.aclose()

    return Forwarded(200, stream=relay())


def _flat_text(payload: dict[str, Any]) -> dict[str, Any]:
    """Messages whose content is a list of text parts, as one string: llama.cpp's chat
    templates concatenate strings (a list there is a 500)."""
    messages = [
        {**m, "content": " ".join(p.get("text", "") for p in m["content"])}
        if isinstance(m.get("content"), list)
        else m
        for m in payload.get("messages", [])
    ]
    return {**payload, "messages": messages}


def _refused(status: int, data: bytes) -> TunestackError:
    """An error answer of the LLM server in our error shape, without the Python traceback
    llama.cpp appends (server paths); a 5xx there is a 502 here."""
    try:
        detail = json.loads(data)["error"]
        detail = detail.get("message", detail) if isinstance(detail, dict) else detail
    except (ValueError, KeyError, TypeError):
        detail = data.decode("utf-8", "replace")
    lines = [line.strip() for line in str(detail).splitlines() if line.strip()]
    end = next((i for i, t in enumerate(lines) if t.startswith(("File ", "Traceback"))), None)
    first = " ".join(lines[:end])[:300]
    err = TunestackError(
        f"The LLM server refused the request ({status}): {first}",
        hint="Check the request's fields against the OpenAI chat API; GET /v1/models lists "
        "the models the server serves.",
    )
    err.status_code = status if status < 500 else 502
    return err
