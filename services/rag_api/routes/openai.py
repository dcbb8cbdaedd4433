"""OpenAI-compatible endpoints: chat/completions (RAG or pass-through), models, embeddings.

`model="rag/<collection>"` answers from retrieved chunks (services.rag_api.answering) and
adds a `sources` list to the response (and to the first stream chunk); any other model
name is forwarded unchanged to the configured LLM server.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from services.common.api_schemas import ChatRequest, EmbeddingsRequest
from services.common.errors import BadInput
from services.rag_api import answering, catalog, openai_shapes
from services.rag_api.context import RagContext
from services.rag_api.passthrough import forward_chat

router = APIRouter(prefix="/v1", tags=["openai"])
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
TUNESTACK_FIELDS = {"top_k", "retrieval_mode", "embedder", "llm", "min_relevance"}


def context(request: Request) -> RagContext:
    return request.app.state.tunestack


@router.post("/chat/completions", summary="OpenAI chat completions; rag/<collection> for RAG")
async def chat_completions(request: Request, body: ChatRequest) -> Any:
    ctx = context(request)
    if not body.model.startswith(catalog.RAG_PREFIX):
        payload = body.model_dump(exclude_none=True, exclude=TUNESTACK_FIELDS)
        fwd = await forward_chat(ctx.llm.target, payload, body.stream)
        if fwd.stream is not None:
            return StreamingResponse(fwd.stream, media_type="text/event-stream")
        return JSONResponse(fwd.body, status_code=fwd.status)
    req = answer_request(body)
    if not body.stream:
        return openai_shapes.completion(body.model, await answering.answer(ctx, req))
    stream = await answering.stream_answer(ctx, req)
    events = openai_shapes.chunk_events(body.model, stream)
    return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)


def answer_request(body: ChatRequest) -> answering.AnswerRequest:
    messages = [m.model_dump() for m in body.messages]
    last_user = next((i for i in range(len(messages) - 1, -1, -1) if _text(messages[i])), None)
    if last_user is None:
        raise BadInput("No user message with text content.", hint="Send a user message.")
    return answering.AnswerRequest(
        collection=body.model[len(catalog.RAG_PREFIX) :],
        question=_text(messages[last_user]),
        history=messages[:last_user],
        top_k=body.top_k,
        mode=body.retrieval_mode,
        embedder=body.embedder,
        llm=body.llm,
        temperature=body.temperature,
        max_tokens=body.max_tokens,
        frequency_penalty=body.frequency_penalty,
        min_relevance=body.min_relevance,
    )


def _text(m: dict[str, Any]) -> str:
    """A user message's text (OpenAI content may be a string or a list of parts)."""
    if m.get("role") != "user":
        return ""
    c = m.get("content")
    if isinstance(c, list):
        c = " ".join(p.get("text", "") for p in c if isinstance(p, dict))
    return c.strip() if isinstance(c, str) else ""


@router.get("/models", summary="RAG collections, the LLM server's models and embedders")
async def models(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": await catalog.model_catalog(context(request))}


@router.post(
    "/embeddings",
    summary="OpenAI-compatible embeddings from a registered embedder",
    response_model=dict[str, Any],
)
async def embeddings(request: Request, body: EmbeddingsRequest) -> JSONResponse:
    out = await catalog.embeddings(context(request), body.model, body.input, body.encoding_format)
    # rendered on a worker thread: 2,048 vectors are 16 MB of JSON (~1 s of CPU)
    return await run_in_threadpool(JSONResponse, out)
