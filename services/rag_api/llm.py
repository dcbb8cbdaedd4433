"""The LLM the RAG API talks to: any OpenAI-compatible /v1 endpoint.

The target lives in one mutable holder so a deploy can switch models atomically: a
request reads the target once at its start and keeps it until it ends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from services.common.errors import ServiceUnavailable, TunestackError, UpstreamTimeout


@dataclass(frozen=True)
class LlmTarget:
    base_url: str
    model: str
    api_key: str
    timeout_s: float = 120.0

    def chat_model(
        self,
        *,
        temperature: float,
        max_tokens: int,
        streaming: bool,
        frequency_penalty: float = 0.0,
    ) -> Any:
        from langchain_openai import ChatOpenAI

        return ChatOpenAI(
            base_url=self.base_url,
            api_key=self.api_key,
            model=self.model,
            temperature=temperature,
            frequency_penalty=frequency_penalty or None,
            # LangChain sends max_tokens as `max_completion_tokens`, which llama.cpp's
            # server ignores (it then generates up to the context size); `max_tokens` in
            # the body is what llama.cpp, Ollama and vLLM read, and OpenAI still accepts
            extra_body={"max_tokens": max_tokens},
            timeout=self.timeout_s,
            max_retries=0,
            streaming=streaming,
            stream_usage=True,
        )


class LlmHolder:
    """The current target. With `follow`, a switch made by another process (a queue worker's
    deploy job, another API replica) is picked up too: `follow` is asked at most once a
    second and returns the target it recorded when that record changed, else None."""

    def __init__(
        self,
        target: LlmTarget,
        follow: Callable[[], LlmTarget | None] | None = None,
        every_s: float = 1.0,
    ) -> None:
        self._target = target
        self._lock = threading.Lock()
        self._follow = follow
        self._every = every_s
        self._next = 0.0

    @property
    def target(self) -> LlmTarget:
        with self._lock:
            if self._follow is not None and time.monotonic() >= self._next:
                self._next = time.monotonic() + self._every
                found = self._follow()
                if found is not None:
                    self._target = found
            return self._target

    def switch(self, target: LlmTarget) -> LlmTarget:
        with self._lock:
            old, self._target = self._target, target
            return old


def down(target: LlmTarget, e: BaseException | None = None) -> ServiceUnavailable:
    why = f" ({type(e).__name__})" if e else ""
    return ServiceUnavailable(
        "llm",
        f"The LLM server is not reachable at {target.base_url}{why}.",
        hint="Start it with `tunestack up` (local: llama.cpp server; docker: ollama or "
        "llamacpp), or point TUNESTACK_RAG_LLM_BASE_URL at a running OpenAI-compatible server.",
    )


def translate(target: LlmTarget, e: BaseException) -> TunestackError:
    """Map client exceptions (openai, httpx) to errors that name the LLM service."""
    import openai

    # openai.APITimeoutError is an APIConnectionError: a slow server is not a dead one
    timed_out = isinstance(e, openai.APITimeoutError) or (
        isinstance(e, httpx.TimeoutException) and not isinstance(e, httpx.ConnectTimeout)
    )
    if not timed_out and isinstance(
        e, (openai.APIConnectionError, httpx.ConnectError, httpx.ConnectTimeout, ConnectionError)
    ):
        return down(target, e)
    if timed_out:
        return UpstreamTimeout(
            "llm",
            f"The LLM server at {target.base_url} did not answer within "
            f"{target.timeout_s:g} s (it is reachable, but slow or stuck).",
            hint="Raise TUNESTACK_RAG_LLM_TIMEOUT_S, ask for fewer max_tokens, or use a "
            "smaller model.",
        )
    if isinstance(e, openai.APIStatusError):
        err = TunestackError(
            f"The LLM server answered {e.status_code}: {e.message}",
            hint=f"Check that model '{target.model}' is served at {target.base_url}.",
        )
        err.status_code = 502
        return err
    if isinstance(e, TunestackError):
        return e
    err = TunestackError(f"LLM call failed: {type(e).__name__}: {e}")
    err.status_code = 502
    return err


async def list_models(target: LlmTarget) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=5.0) as c:
        r = await c.get(
            f"{target.base_url.rstrip('/')}/models",
            headers={"Authorization": f"Bearer {target.api_key}"},
        )
        r.raise_for_status()
        data = r.json().get("data", [])
        return [d for d in data if isinstance(d, dict)]
