"""OpenAI response shapes for RAG answers: chat.completion JSON and chat.completion.chunk
SSE events, with Tunestack's `sources` (and `retrieval`) added.

Kept apart from the route so the route stays a few lines and the shapes can be checked
against OpenAI's without a server.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from services.rag_api.answering import Answer, AnswerStream
from services.rag_api.retrieval import Hit


def sources_payload(hits: list[Hit]) -> list[dict[str, Any]]:
    return [
        {
            "index": i,
            "id": h.id,
            "source": h.source,
            "file_name": h.file_name,
            "chunk_index": h.chunk_index,
            "page": h.page,
            "score": round(h.score, 6),
            "text": h.text,
        }
        for i, h in enumerate(hits, start=1)
    ]


def completion(model: str, a: Answer) -> dict[str, Any]:
    """A non-streamed chat.completion."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": a.text},
                "finish_reason": a.finish_reason,
            }
        ],
        "usage": a.usage,
        "sources": sources_payload(a.hits),
        "retrieval": {
            "embedder": a.retrieval.embedder,
            "mode": a.retrieval.mode,
            "took_ms": round(a.retrieval.took_ms, 2),
        },
    }


def sse(obj: Any) -> bytes:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode()


async def chunk_events(model: str, stream: AnswerStream) -> AsyncIterator[bytes]:
    """SSE events of a streamed answer: the first carries the role and `sources`, the
    last the finish reason and usage; an error after the first token is an `error` event
    (the HTTP status is already sent), then [DONE]."""
    base = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }

    def delta(d: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        return sse(
            {**base, "choices": [{"index": 0, "delta": d, "finish_reason": finish}], **extra}
        )

    yield delta({"role": "assistant", "content": ""}, sources=sources_payload(stream.hits))
    async for ev in stream:
        if ev.error is not None:
            yield sse({"error": {**ev.error.to_dict(), "code": ev.error.status_code}})
        elif ev.done:
            yield delta({}, ev.finish_reason or "stop", usage=ev.usage or None)
        else:
            yield delta({"content": ev.text})
    yield b"data: [DONE]\n\n"
