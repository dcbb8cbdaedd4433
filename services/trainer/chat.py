"""`llm chat`: a multi-turn conversation with a base model or a trained run.

The history is re-rendered with the model's chat template on every turn (exactly the
format it was trained on), replies stream token by token, and generation stops at the
template's end-of-turn token, so the model never runs on into a made-up user turn.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from services.trainer.datasets import Message
from services.trainer.inference import LoadedLLM, generate, prompt_for


@dataclass
class Reply:
    text: str
    stop_reason: str  # "stop": end-of-turn token; "length": max_new_tokens reached


@dataclass
class ChatSession:
    llm: LoadedLLM
    system: str | None = None
    max_new_tokens: int = 256
    temperature: float = 0.0
    history: list[Message] = field(default_factory=list)

    def reset(self) -> None:
        self.history.clear()

    def prompt(self, user_text: str) -> str:
        return prompt_for(self.llm, [*self.history, Message("user", user_text)], self.system)

    def reply(self, user_text: str, on_text: Callable[[str], None] | None = None) -> Reply:
        """Answer one user message; `on_text` receives the reply as it is generated."""
        prompt = self.prompt(user_text)
        if on_text is None:
            text, reason = generate(
                self.llm, [prompt], max_new_tokens=self.max_new_tokens, temperature=self.temperature
            )[0]
        else:
            text, reason = self._stream(prompt, on_text)
        self.history += [Message("user", user_text), Message("assistant", text)]
        return Reply(text, reason)

    def _stream(self, prompt: str, on_text: Callable[[str], None]) -> tuple[str, str]:
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(
            self.llm.tokenizer, skip_prompt=True, skip_special_tokens=True
        )
        result: list[tuple[str, str]] = []
        errors: list[BaseException] = []

        def run() -> None:
            try:
                result.extend(
                    generate(
                        self.llm,
                        [prompt],
                        max_new_tokens=self.max_new_tokens,
                        temperature=self.temperature,
                        streamer=streamer,
                    )
                )
            except BaseException as e:  # surfaced in the caller's thread below
                errors.append(e)
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        for piece in _until_stop(streamer, self.llm.template.stop_words):
            on_text(piece)
        worker.join()
        if errors:
            raise errors[0]
        return result[0]


def _until_stop(pieces: Iterator[str], stops: list[str]) -> Iterator[str]:
    """Pass streamed text through, cutting at a stop word that arrives as text."""
    seen = ""
    for piece in pieces:
        seen += piece
        hit = min((seen.find(s) for s in stops if s in seen), default=-1)
        if hit >= 0:
            already = len(seen) - len(piece)
            if hit > already:
                yield seen[already:hit]
            for _ in pieces:  # drain so the generating thread can finish
                pass
            return
        yield piece
