"""Answer a question from a collection: retrieve, prompt, ask the LLM, cite.

The one RAG answer pipeline. The OpenAI-compatible route only shapes its results into
chat.completion JSON or SSE; anything else that needs an answer (an evaluation, a job)
calls these functions and gets the same retrieval, prompt, LLM settings and citations.

The relevance gate: where the build has a calibrated threshold (`tunestack rag
calibrate`) and the best passage dense search found is less similar than it, the answer
is the abstention sentence, without asking the LLM. A small model asked to abstain from
its passages abstains on answerable questions too (on XQuAD, teaching it cost 15
points of F1); whether the documents cover the question at all is something the
embedder judges better, and for free.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import BadInput, TunestackError
from services.common.rag_prompt import abstention_for
from services.rag_api import llm as llm_mod
from services.rag_api import prompts
from services.rag_api.context import RagContext
from services.rag_api.llm import LlmTarget
from services.rag_api.retrieval import Hit, RetrievalResult


@dataclass
class AnswerRequest:
    collection: str
    question: str
    history: list[dict[str, Any]] = field(default_factory=list)  # earlier OpenAI messages
    top_k: int | None = None
    mode: str = "dense"
    embedder: str | None = None
    llm: str | None = None  # a model the LLM server serves, instead of the deployed one
    temperature: float | None = None
    max_tokens: int | None = None
    frequency_penalty: float | None = None
    # the relevance gate: None = the build's calibrated threshold, 0 = off
    min_relevance: float | None = None


@dataclass
class Answer:
    text: str
    retrieval: RetrievalResult
    model: str
    usage: dict[str, int]
    finish_reason: str
    seconds: float
    gated: bool = False  # the relevance gate answered; the LLM was not asked

    @property
    def hits(self) -> list[Hit]:
        return self.retrieval.hits


@dataclass
class AnswerEvent:
    """One step of a streamed answer: a piece of text, or the end (with usage), or an
    error that happened after the first token (reported in the stream, not raised)."""

    text: str = ""
    done: bool = False
    usage: dict[str, int] = field(default_factory=dict)
    finish_reason: str | None = None
    error: TunestackError | None = None


@dataclass
class _Prepared:
    retrieval: RetrievalResult
    target: LlmTarget
    chat_model: Any
    inputs: dict[str, Any]
    gated: bool


def gate_closed(retrieval: RetrievalResult, min_relevance: float | None) -> bool:
    """True when no retrieved passage is similar enough to the question to hold its
    answer: the best dense similarity is below the threshold (the request's, else the
    build's). Off without a threshold, and in bm25 mode (its scores have no fixed scale)."""
    threshold = retrieval.min_relevance if min_relevance is None else min_relevance
    if min_relevance is not None and not 0.0 <= min_relevance <= 1.0:
        raise BadInput("min_relevance must be between 0 and 1 (0 turns the gate off).")
    if not threshold or retrieval.best_dense is None:
        return False
    return retrieval.best_dense < threshold


async def _prepare(ctx: RagContext, req: AnswerRequest, *, streaming: bool) -> _Prepared:
    s = ctx.settings
    retrieval = await asyncio.to_thread(
        ctx.retriever.retrieve,
        req.collection,
        req.question,
        mode=req.mode,
        top_k=req.top_k or s.top_k,
        embedder=req.embedder,
    )
    target = ctx.llm.target  # read once: a switch mid-answer does not change this answer
    if req.llm:
        target = dataclasses.replace(target, model=req.llm)
    chat_model = target.chat_model(
        temperature=s.temperature if req.temperature is None else req.temperature,
        max_tokens=req.max_tokens or s.max_tokens,
        streaming=streaming,
        frequency_penalty=s.frequency_penalty
        if req.frequency_penalty is None
        else req.frequency_penalty,
    )
    history = prompts.history_messages([*req.history, {"role": "user", "content": req.question}])
    inputs = prompts.prompt_input(req.question, retrieval.hits, history)
    gated = gate_closed(retrieval, req.min_relevance)
    return _Prepared(retrieval, target, chat_model, inputs, gated)


_NO_TOKENS = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


async def answer(ctx: RagContext, req: AnswerRequest) -> Answer:
    """The whole answer at once, with citation markers ensured."""
    t0 = time.perf_counter()
    p = await _prepare(ctx, req, streaming=False)
    if p.gated:
        text = abstention_for(req.question)
        took = time.perf_counter() - t0
        return Answer(text, p.retrieval, p.target.model, dict(_NO_TOKENS), "stop", took, True)
    try:
        text, usage = await prompts.answer(p.chat_model, p.inputs)
    except Exception as e:
        raise llm_mod.translate(p.target, e) from e
    text += prompts.citation_suffix(text, p.retrieval.hits)
    return Answer(text, p.retrieval, p.target.model, usage, "stop", time.perf_counter() - t0)


class AnswerStream:
    """A streamed answer whose first token has already arrived (so a dead LLM was a clean
    error before anything was sent); iterate it for AnswerEvents."""

    def __init__(
        self, p: _Prepared, first: Any, rest: AsyncIterator[Any], fixed: str | None = None
    ) -> None:
        self.retrieval = p.retrieval
        self.model = p.target.model
        self.gated = p.gated
        self._target = p.target
        self._first = first
        self._rest = rest
        self._fixed = fixed  # the whole answer, known without the LLM (the gate's)

    @property
    def hits(self) -> list[Hit]:
        return self.retrieval.hits

    async def __aiter__(self) -> AsyncIterator[AnswerEvent]:
        parts: list[str] = []
        usage: dict[str, int] = {}
        finish = "stop"

        def event(chunk: Any) -> AnswerEvent | None:
            nonlocal usage, finish
            if getattr(chunk, "usage_metadata", None):
                usage = prompts.usage_of(chunk.usage_metadata)
            fr = (getattr(chunk, "response_metadata", None) or {}).get("finish_reason")
            if fr:
                finish = fr
            text = str(chunk.content or "")
            if not text:
                return None
            parts.append(text)
            return AnswerEvent(text=text)

        if self._fixed is not None:
            yield AnswerEvent(text=self._fixed)
            yield AnswerEvent(done=True, usage=dict(_NO_TOKENS), finish_reason="stop")
            return
        try:
            if self._first is not None and (ev := event(self._first)):
                yield ev
            async for chunk in self._rest:
                if ev := event(chunk):
                    yield ev
            suffix = prompts.citation_suffix("".join(parts), self.hits)
            if suffix:
                yield AnswerEvent(text=suffix)
            yield AnswerEvent(done=True, usage=usage, finish_reason=finish)
        except Exception as e:
            yield AnswerEvent(done=True, error=llm_mod.translate(self._target, e))


async def stream_answer(ctx: RagContext, req: AnswerRequest) -> AnswerStream:
    p = await _prepare(ctx, req, streaming=True)
    if p.gated:
        return AnswerStream(p, None, _nothing(), fixed=abstention_for(req.question))
    rest = prompts.stream(p.chat_model, p.inputs)
    try:  # pull the first token now, so a dead LLM is a clean 503, not a broken stream
        first = await rest.__anext__()
    except StopAsyncIteration:
        first = None
    except Exception as e:
        raise llm_mod.translate(p.target, e) from e
    return AnswerStream(p, first, rest)


async def _nothing() -> AsyncIterator[Any]:
    return
    yield  # an async generator that yields nothing
