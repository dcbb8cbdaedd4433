"""A Word2Vec skip-gram baseline: word vectors trained on the user's own corpus (gensim),
mean-pooled per text. It exists to be compared with, so users see what a transformer
embedder buys them over the classic method the Chinese LLM tutorials start from.

Tokens are jieba's words for text with CJK characters and lower-cased word characters
otherwise: the same segmentation at training and at query time. A text with no known
word gets the zero vector (it matches nothing rather than something at random).
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

from services.common.embedders.base import Embedder, TextKind, normalize

VECTORS_FILE = "vectors.kv"
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"\w+")
_jieba_lock = threading.Lock()


def words(text: str) -> list[str]:
    """The word tokens Word2Vec is trained on and pools over."""
    text = text.lower()
    if not _CJK.search(text):
        return _WORD.findall(text)
    import jieba  # optional extra (embed): only for text with CJK characters

    logging.getLogger("jieba").setLevel(logging.WARNING)
    with _jieba_lock:  # jieba builds its dictionary lazily, once, not thread-safely
        cut = jieba.lcut(text)
    return [w for w in cut if _WORD.fullmatch(w)]


class Word2VecEmbedder(Embedder):
    provider = "word2vec"

    def __init__(self, name: str, fingerprint: str, model_path: Path) -> None:
        from gensim.models import KeyedVectors  # optional extra (embed)

        self.name = name
        self.fingerprint = fingerprint
        self._kv: Any = KeyedVectors.load(str(model_path), mmap="r")

    @property
    def dimension(self) -> int:
        return int(self._kv.vector_size)

    @property
    def max_seq_length(self) -> int:
        return 100_000  # pooling has no window

    def tokens(self, text: str) -> list[int]:
        return [0] * len(words(text))

    def encode(
        self,
        texts: list[str],
        *,
        show_progress: bool = False,
        prompt: str | None = None,
        kind: TextKind = "document",
    ) -> np.ndarray:
        kv = self._kv
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, text in enumerate(texts):
            idx = [kv.key_to_index[w] for w in words(text) if w in kv.key_to_index]
            if idx:
                out[i] = kv.vectors[idx].mean(axis=0)
        return normalize(out)
