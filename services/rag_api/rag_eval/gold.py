"""Which chunks of a collection hold a question's gold passage and its answer.

A dataset names passages by their text (SQuAD, CMRC, EmbeddingQA) or a file (JSONL
`source`), while the collection holds chunks cut from whatever files were ingested. A
chunk belongs to a gold passage when, compared without whitespace and case, one contains
the other (a passage split into several chunks, or several passages in one file); failing
that, when 90% of a chunk's distinct words are the passage's (markup stripped at ingest).
Among a passage's chunks, the answer-bearing ones contain a reference answer; when none
does (the answer is free text, not a span) every chunk of the passage counts.

A question whose gold passage matches no chunk is not answerable from the collection: it
is counted (`gold_missing`) and scored for abstention, never an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from services.rag_api.rag_eval.records import EvalQuestion
from services.rag_api.store import Build, VectorStore

_WS = re.compile(r"\s+")
_WORD = re.compile(r"\w+")
WORD_CONTAINMENT = 0.9


def squash(text: str) -> str:
    return _WS.sub("", text).lower()


@dataclass(frozen=True)
class Chunk:
    id: str
    text: str
    file_name: str = ""
    source: str = ""  # path relative to the folder it was ingested from


def build_chunks(store: VectorStore, build: Build) -> list[Chunk]:
    """A collection build's chunks, as gold passages are matched against them."""
    return [
        Chunk(
            id=str(r["id"]),
            text=str(r["documents"] or ""),
            file_name=str((r["metadatas"] or {}).get("file_name", "")),
            source=str((r["metadatas"] or {}).get("rel_path", "")),
        )
        for r in store.iter_records(build, include=["documents", "metadatas"])
    ]


@dataclass(frozen=True)
class Gold:
    bearing: frozenset[str]  # chunk ids that hold the answer
    in_collection: bool | None  # the gold passage/source is in the collection (None: unknown)


class ChunkIndex:
    def __init__(self, chunks: Iterable[Chunk]) -> None:
        self.chunks = list(chunks)
        self._squashed = [squash(c.text) for c in self.chunks]
        self._words: list[frozenset[str]] | None = None
        self._passages: dict[str, frozenset[str]] = {}

    def __len__(self) -> int:
        return len(self.chunks)

    def _word_sets(self) -> list[frozenset[str]]:
        if self._words is None:
            self._words = [frozenset(_WORD.findall(c.text.lower())) for c in self.chunks]
        return self._words

    def passage_chunks(self, passage: str) -> frozenset[str]:
        cached = self._passages.get(passage)
        if cached is not None:
            return cached
        p = squash(passage)
        found = {
            c.id
            for c, s in zip(self.chunks, self._squashed, strict=True)
            if s and p and (s in p or p in s)
        }
        if not found and p:
            words = frozenset(_WORD.findall(passage.lower()))
            for c, w in zip(self.chunks, self._word_sets(), strict=True):
                if len(w) >= 5 and len(w & words) >= WORD_CONTAINMENT * len(w):
                    found.add(c.id)
        result = frozenset(found)
        self._passages[passage] = result
        return result

    def file_chunks(self, source: str) -> frozenset[str]:
        src = source.replace("\\", "/").strip("/")
        base = src.rsplit("/", 1)[-1]
        return frozenset(
            c.id for c in self.chunks if c.source == src or c.source.endswith("/" + src)
        ) or frozenset(c.id for c in self.chunks if c.file_name == base and "/" not in src)

    def containing(self, answers: Iterable[str], among: frozenset[str] | None) -> frozenset[str]:
        keys = [k for k in (squash(a) for a in answers) if k]
        return frozenset(
            c.id
            for c, s in zip(self.chunks, self._squashed, strict=True)
            if (among is None or c.id in among) and any(k in s for k in keys)
        )

    def gold(self, q: EvalQuestion) -> Gold:
        if q.passages or q.source:
            chunks: frozenset[str] = frozenset()
            for p in q.passages:
                chunks |= self.passage_chunks(p)
            if q.source:
                chunks |= self.file_chunks(q.source)
            if not chunks:
                return Gold(frozenset(), False)
            with_answer = self.containing(q.answers, chunks) if q.answers else frozenset()
            return Gold(with_answer or chunks, True)
        if q.answers:
            return Gold(self.containing(q.answers, None), None)
        return Gold(frozenset(), None)
