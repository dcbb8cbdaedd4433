"""RAFT-style examples: a question, k retrieved passages, the answer the model should give.

- Distractors are retrieved, not random: BM25 (rag_api's own tokenizer and index) over
  every chunk, top-ranked for the question, leaving out the gold chunks and any chunk
  that holds a reference answer, verbatim or all of its words (with overlapping chunks
  the neighbour of the gold one often does, and a price table row holds "279" and "EUR";
  "not in the documents" would then be a wrong lesson). When BM25 finds too few, random
  chunks fill up (seeded).
- The gold chunk goes to a random position; with probability `distractor_only` the
  example has distractors only and its answer is the abstention sentence (RAFT's
  "(1 - P)" share), which is also the answer to a question its QA set marks unanswerable.
- The prompt is services/common/rag_prompt.py's, byte for byte what the RAG chain sends:
  the passages laid out by `format_context` (cut where it cuts), the question as the user
  turn. The answer is the reference answer with its passage's number, `<answer> [n].`:
  `rag eval` strips [n] before F1, and reads it as the citation.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.common.rag_prompt import ABSTENTION, format_context, rag_messages
from services.rag_api.bm25 import Bm25Index, tokenize
from services.rag_api.rag_eval.gold import squash
from services.rag_api.rag_synth.passages import SynthPassage

_CJK = re.compile(r"[\u4e00-\u9fff]")
_END = "。！？.!?"
_WORD = re.compile(r"[\u4e00-\u9fff]|[^\W_]+")


def words(text: str) -> list[str]:
    """Lower-cased words, each Chinese character one word (no segmenter needed to compare)."""
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class Question:
    """A question, the chunks that answer it (empty: none does) and its reference answer."""

    question: str
    answer: str | None
    gold: tuple[str, ...]  # ids of the chunks holding the answer, best first


@dataclass(frozen=True)
class Example:
    question: str
    passages: tuple[SynthPassage, ...]  # as shown, in order (after format_context's cut)
    gold: int | None  # 1-based position of the gold passage; None: distractors only
    answer: str
    messages: tuple[dict[str, str], ...]  # system + user, exactly as served

    @property
    def system(self) -> str:
        return self.messages[0]["content"]


def cite(answer: str, n: int) -> str:
    """`<answer> [n].`: the citation before the final full stop, as the prompt asks."""
    text = answer.strip()
    end = text[-1] if text and text[-1] in _END else ("。" if _CJK.search(text) else ".")
    body = text[:-1].rstrip() if text and text[-1] in _END else text
    return f"{body} [{n}]{end}"


class Distractors:
    """BM25 over every chunk: the best-ranked chunks for a question that are not gold."""

    def __init__(self, passages: Sequence[SynthPassage]) -> None:
        self.passages = {p.id: p for p in passages}
        self.ids = list(self.passages)
        self._squashed = {p.id: squash(p.text) for p in passages}
        self._words = {p.id: set(words(p.text)) for p in passages}
        self.index = Bm25Index.build(self.ids, [tokenize(p.text) for p in passages])

    def holding(self, answer: str | None) -> set[str]:
        """Chunks that give the answer away: it occurs verbatim (whitespace and case aside),
        or every word of it does (a price table row holds "279" and "EUR" but not "279 EUR")."""
        key = squash(answer or "")
        if len(key) < 2:
            return set()
        needed = set(words(answer or ""))
        return {
            i
            for i, s in self._squashed.items()
            if key in s or (needed and needed <= self._words[i])
        }

    def rank(self, question: str) -> list[str]:
        return [i for i, _ in self.index.search(question, len(self.ids))]

    def pick(self, q: Question, n: int, rng: random.Random) -> list[SynthPassage]:
        banned = set(q.gold) | self.holding(q.answer)
        chosen = [i for i in self.rank(q.question) if i not in banned][:n]
        if len(chosen) < n:  # BM25 found too few: random chunks fill up (seeded)
            taken = banned | set(chosen)
            rest = [i for i in self.ids if i not in taken]
            chosen += rng.sample(rest, min(n - len(chosen), len(rest)))
        return [self.passages[i] for i in chosen]


def _shown(passages: list[SynthPassage]) -> int:
    """How many passages format_context keeps (it stops at MAX_CONTEXT_CHARS)."""
    full, n = format_context(passages), len(passages)
    while n > 1 and format_context(passages[: n - 1]) == full:
        n -= 1
    return n


def build_example(
    q: Question,
    distractors: Distractors,
    *,
    top_k: int,
    distractor_only: float,
    rng: random.Random,
) -> Example:
    """One example; the rng decides (in this order) distractors-only and the position."""
    answerable = bool(q.gold) and q.answer is not None
    only = not answerable or rng.random() < distractor_only
    if only:
        shown = distractors.pick(q, top_k, rng)
        shown = shown[: _shown(shown)]
        return _example(q.question, shown, None, ABSTENTION)
    others = distractors.pick(q, top_k - 1, rng)
    gold = distractors.passages[q.gold[0]]
    pos = rng.randrange(len(others) + 1)
    passages = [*others[:pos], gold, *others[pos:]]
    n = _shown(passages)
    if pos >= n:  # cut off by format_context: move the gold passage into view
        passages.pop(pos)
        pos = rng.randrange(n)
        passages.insert(pos, gold)
        n = _shown(passages)
    assert q.answer is not None
    return _example(q.question, passages[:n], pos + 1, cite(q.answer, pos + 1))


def _example(question: str, passages: list[SynthPassage], gold: int | None, answer: str) -> Example:
    messages = rag_messages(question, format_context(passages))
    return Example(question, tuple(passages), gold, answer, tuple(messages))


def sharegpt_record(ex: Example) -> dict[str, object]:
    """LLaMA-Factory sharegpt with the system turn first (system, human, gpt)."""
    return {
        "conversations": [
            {"from": "system", "value": ex.system},
            {"from": "human", "value": ex.messages[1]["content"]},
            {"from": "gpt", "value": ex.answer},
        ]
    }


def alpaca_record(ex: Example) -> dict[str, str]:
    return {
        "instruction": ex.messages[1]["content"],
        "input": "",
        "output": ex.answer,
        "system": ex.system,
    }


DATASET_INFO: dict[str, dict[str, Any]] = {
    "sharegpt": {"formatting": "sharegpt", "columns": {"messages": "conversations"}},
    "alpaca": {
        "columns": {
            "prompt": "instruction",
            "query": "input",
            "response": "output",
            "system": "system",
        }
    },
}
