"""The RAG answer prompt, in one place: the RAG API serves with it and the trainer trains on it.

A model tuned on preferences learned from evaluation failures (`tunestack llm prefs`)
must see, in training, exactly the prompt it is later served with; a paraphrase would
teach it to answer a prompt nobody sends. So the instruction text and the passage
layout live here, free of LangChain: services/rag_api/prompts.py builds its LangChain
chat prompt from these strings, and services/trainer builds its training records with
`rag_messages`. tests/unit/test_trainer_prefs.py checks that both give the same messages.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

# Context goes in the system message and the question stays the user turn: measured on
# samples/questions.json with the bundled 135M model, this layout answered more questions
# correctly and rambled less than "Context: ... Question: ..." in one user message.
SYSTEM = (
    "Answer the question in one or two sentences using only the passages below. End with "
    "the number of the passage you used, like [1]. If the passages do not contain the "
    "answer, say that you do not know.\n\n{context}"
)
MAX_CONTEXT_CHARS = 6000
# The answer where the documents do not hold one: what `llm synth` and `llm prefs` train
# the model to say, what the relevance gate answers without asking it, and what rag eval
# counts as abstaining (services/rag_api/rag_eval/metrics.py matches both sentences).
ABSTENTION = "I do not know: the passages do not contain the answer."
ABSTENTION_ZH = "我不知道：这些段落中没有答案。"
_CJK = re.compile(r"[\u4e00-\u9fff]")


def abstention_for(question: str) -> str:
    """The abstention sentence in the question's language (Chinese or English)."""
    return ABSTENTION_ZH if _CJK.search(question) else ABSTENTION


class Passage(Protocol):
    """What a passage needs to be shown to the model (a retrieval hit is one)."""

    @property
    def text(self) -> str: ...

    @property
    def file_name(self) -> str: ...

    @property
    def page(self) -> str | None: ...


def format_context(passages: Sequence[Passage], max_chars: int = MAX_CONTEXT_CHARS) -> str:
    """Numbered passages, `Passage [i] (file, page p):` then the text, until max_chars."""
    parts: list[str] = []
    used = 0
    for i, h in enumerate(passages, start=1):
        where = h.file_name + (f", page {h.page}" if h.page else "")
        block = f"Passage [{i}] ({where}):\n{h.text}"
        if used + len(block) > max_chars and parts:
            break
        parts.append(block)
        used += len(block)
    return "\n\n".join(parts)


def system_prompt(context: str) -> str:
    """The system message for a formatted context block."""
    return SYSTEM.replace("{context}", context)


def rag_messages(question: str, context: str) -> list[dict[str, str]]:
    """The chat messages the RAG API sends for a question without earlier turns."""
    return [
        {"role": "system", "content": system_prompt(context)},
        {"role": "user", "content": question},
    ]
