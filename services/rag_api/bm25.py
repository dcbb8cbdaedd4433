"""BM25 over a collection's chunks, with Chinese-aware tokenization.

Tokens are computed once at ingest (stored in chunk metadata as `bm25`), so building the
index after a change is a split and a bm25s.index call, not a re-run of jieba over the
whole corpus. Indexes are cached per (logical build, version).
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass

import numpy as np

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_WORD = re.compile(r"[0-9a-z\u00c0-\u024f]+(?:['’][a-z]+)?")
_STOP = frozenset(
    """a an and are as at be but by for from has have he her his how i if in into is it its
    me my of on or our she so than that the their them then there these they this to was we
    were what when where which who whom why will with you your do does did not can could
    would should about""".split()  # noqa: SIM905 - a word list reads better as prose
)
_jieba_lock = threading.Lock()
_jieba_ready = False


def _jieba():
    global _jieba_ready
    import jieba

    with _jieba_lock:
        if not _jieba_ready:
            jieba.setLogLevel(logging.WARNING)
            jieba.initialize()
            _jieba_ready = True
    return jieba


def tokenize(text: str) -> list[str]:
    """Lower-cased words without stopwords; CJK runs segmented by jieba (search mode)."""
    out: list[str] = []
    lowered = text.lower()
    pos = 0
    for m in _CJK.finditer(lowered):
        out.extend(w for w in _WORD.findall(lowered[pos : m.start()]) if w not in _STOP)
        out.extend(t for t in _jieba().lcut_for_search(m.group()) if t.strip())
        pos = m.end()
    out.extend(w for w in _WORD.findall(lowered[pos:]) if w not in _STOP)
    return out


@dataclass
class Bm25Index:
    ids: list[str]
    retriever: object

    @classmethod
    def build(cls, ids: list[str], token_lists: list[list[str]]) -> Bm25Index:
        import bm25s

        r = bm25s.BM25()
        r.index(token_lists, show_progress=False)
        return cls(ids=ids, retriever=r)

    def search(self, query: str, k: int) -> list[tuple[str, float]]:
        toks = tokenize(query)
        if not toks or not self.ids:
            return []
        k = min(k, len(self.ids))
        res = self.retriever.retrieve(  # type: ignore[attr-defined]
            [toks], k=k, show_progress=False, n_threads=1
        )
        docs, scores = np.asarray(res.documents)[0], np.asarray(res.scores)[0]
        return [(self.ids[int(d)], float(s)) for d, s in zip(docs, scores, strict=True) if s > 0]


class Bm25Cache:
    """In-memory BM25 indexes keyed by build (Build.key), invalidated by version."""

    def __init__(self) -> None:
        self._items: dict[str, tuple[str, Bm25Index]] = {}
        self._lock = threading.Lock()

    def get(self, physical: str, version: str) -> Bm25Index | None:
        with self._lock:
            hit = self._items.get(physical)
            return hit[1] if hit and hit[0] == version else None

    def put(self, physical: str, version: str, index: Bm25Index) -> None:
        with self._lock:
            self._items[physical] = (version, index)

    def drop(self, prefix: str) -> None:
        with self._lock:
            for key in [k for k in self._items if k.startswith(prefix)]:
                del self._items[key]


def rrf(rankings: list[list[str]], k: int = 60) -> list[tuple[str, float]]:
    """Reciprocal rank fusion (Cormack et al. 2009): robust to incomparable score scales."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, id_ in enumerate(ranking, start=1):
            scores[id_] = scores.get(id_, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
