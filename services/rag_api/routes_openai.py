"""OpenAI-compatible endpoints: chat/completions (RAG or pass-through), models, embeddings.

`model="rag/<collection>"` answers from retrieved chunks and adds a `sources` list to the
response (and to the first stream chunk); any other model name is forwarded unchanged to
the configured LLM server, so this API can stand in for it in any OpenAI client.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from services.common.errors import BadInput, TunestackError
from services.rag_api import llm as llm_mod
from services.rag_api import rag_chain
from services.rag_api.retrieval import Hit
from services.rag_api.schemas import ChatRequest, EmbeddingsRequest
from services.rag_api.state import AppState

router = APIRouter(prefix="/v1", tags=["openai"])
RAG_PREFIX = "rag/"


def state(request: Request) -> AppState:
    return request.app.state.tunestack


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


def _sse(obj: Any) -> bytes:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode()


@router.post("/chat/completions", summary="OpenAI chat completions; rag/<collection> for RAG")
async def chat_completions(request: Request, body: ChatRequest) -> Any:
    st = state(request)
    if not body.model.startswith(RAG_PREFIX):
        return await _passthrough(st, body)
    collection = body.model[len(RAG_PREFIX) :]
    question = _last_user_text(body)
    top_k = body.top_k or st.settings.top_k
    result = await run_in_threadpool(
        st.retriever.retrieve,
        collection,
        question,
        mode=body.retrieval_mode,
        top_k=top_k,
        embedder=body.embedder,
    )
    hits = result.hits
    target = st.llm.target
    if body.llm:
        target = dataclasses.replace(target, model=body.llm)
    chat_model = target.chat_model(
        temperature=st.settings.temperature if body.temperature is None else body.temperature,
        max_tokens=body.max_tokens or st.settings.max_tokens,
        streaming=body.stream,
        frequency_penalty=st.settings.frequency_penalty
        if body.frequency_penalty is None
        else body.frequency_penalty,
    )
    messages = [m.model_dump() for m in body.messages]
    inputs = rag_chain.prompt_input(question, hits, rag_chain.history_messages(messages))
    cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    sources = sources_payload(hits)
    if not body.stream:
        try:
            text, usage = await rag_chain.answer(chat_model, inputs)
        except Exception as e:
            raise llm_mod.translate(target, e) from e
        text += rag_chain.citation_suffix(text, hits)
        return {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": body.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
            "sources": sources,
            "retrieval": {
                "embedder": result.embedder,
                "mode": result.mode,
                "took_ms": round(result.took_ms, 2),
            },
        }

    stream = rag_chain.stream(chat_model, inputs)
    try:  # pull the first token now, so a dead LLM is a clean 503, not a broken stream
        first = await stream.__anext__()
    except StopAsyncIteration:
        first = None
    except Exception as e:
        raise llm_mod.translate(target, e) from e

    async def events() -> AsyncIterator[bytes]:
        base = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": body.model,
        }
        yield _sse(
            {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "finish_reason": None,
                    }
                ],
                "sources": sources,
            }
        )
        parts: list[str] = []
        usage: dict[str, int] = {}
        finish = "stop"

        def delta(chunk: Any) -> bytes | None:
            nonlocal usage, finish
            if getattr(chunk, "usage_metadata", None):
                usage = rag_chain._usage(chunk.usage_metadata)
            fr = (getattr(chunk, "response_metadata", None) or {}).get("finish_reason")
            if fr:
                finish = fr
            text = str(chunk.content or "")
            if not text:
                return None
            parts.append(text)
            return _sse(
                {
                    **base,
                    "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
                }
            )

        try:
            if first is not None and (ev := delta(first)):
                yield ev
            async for chunk in stream:
                if ev := delta(chunk):
                    yield ev
            suffix = rag_chain.citation_suffix("".join(parts), hits)
            if suffix:
                yield _sse(
                    {
                        **base,
                        "choices": [
                            {"index": 0, "delta": {"content": suffix}, "finish_reason": None}
                        ],
                    }
                )
            yield _sse(
                {
                    **base,
                    "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
                    "usage": usage or None,
                }
            )
        except Exception as e:
            err = llm_mod.translate(target, e)
            yield _sse({"error": {**err.to_dict(), "code": err.status_code}})
        yield b"data: [DONE]\n\n"

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _last_user_text(body: ChatRequest) -> str:
    for m in reversed(body.messages):
        if m.role == "user":
            c = m.content
            if isinstance(c, list):  # OpenAI content parts
                c = " ".join(p.get("text", "") for p in c if isinstance(p, dict))
            if isinstance(c, str) and c.strip():
                return c.strip()
    raise BadInput("No user message with text content.", hint="Send a user message.")


async def _passthrough(st: AppState, body: ChatRequest) -> Any:
    target = st.llm.target
    url = f"{target.base_url.rstrip('/')}/chat/completions"
    payload = body.model_dump(
        exclude_none=True, exclude={"top_k", "retrieval_mode", "embedder", "llm"}
    )
    headers = {"Authorization": f"Bearer {target.api_key}"}
    client = httpx.AsyncClient(timeout=httpx.Timeout(target.timeout_s, connect=5.0))
    try:
        req = client.build_request("POST", url, json=payload, headers=headers)
        resp = await client.send(req, stream=True)
    except Exception as e:
        await client.aclose()
        raise llm_mod.translate(target, e) from e
    if not body.stream or resp.status_code != 200:
        data = await resp.aread()
        await resp.aclose()
        await client.aclose()
        try:
            return JSONResponse(json.loads(data), status_code=resp.status_code)
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

    return StreamingResponse(relay(), media_type="text/event-stream")


@router.get("/models", summary="RAG collections, the LLM server's models and embedders")
async def models(request: Request) -> dict[str, Any]:
    st = state(request)
    now = int(time.time())
    data: list[dict[str, Any]] = []
    try:
        names = sorted({b.name for b in await run_in_threadpool(st.store.builds)})
        data += [
            {
                "id": f"{RAG_PREFIX}{n}",
                "object": "model",
                "created": now,
                "owned_by": "tunestack-rag",
            }
            for n in names
        ]
    except TunestackError:
        pass  # Chroma down: the LLM's models are still worth listing
    try:
        for m in await llm_mod.list_models(st.llm.target):
            data.append(
                {
                    "id": m.get("id"),
                    "object": "model",
                    "created": m.get("created", now),
                    "owned_by": m.get("owned_by", "llm-server"),
                }
            )
    except Exception:
        pass
    for e in st.registry.entries("embedder"):
        data.append(
            {"id": e.name, "object": "model", "created": now, "owned_by": "tunestack-embedder"}
        )
    return {"object": "list", "data": data}


@router.post("/embeddings", summary="OpenAI-compatible embeddings from a registered embedder")
async def embeddings(request: Request, body: EmbeddingsRequest) -> dict[str, Any]:
    st = state(request)
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    if not texts or len(texts) > 2048:
        raise BadInput("input must hold 1 to 2048 strings.")
    emb = await run_in_threadpool(st.pool.get, body.model)
    vecs = await run_in_threadpool(emb.encode, texts)
    n_tokens = sum(len(emb.tokens(t)) for t in texts)
    data = []
    for i, v in enumerate(vecs):
        value: Any = (
            base64.b64encode(v.astype("<f4").tobytes()).decode()
            if body.encoding_format == "base64"
            else v.tolist()
        )
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {
        "object": "list",
        "data": data,
        "model": emb.name,
        "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
    }
