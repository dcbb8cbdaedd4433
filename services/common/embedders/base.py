"""What every embedder offers, wherever its vectors come from.

Ingest, retrieval, `/v1/embeddings`, evaluation and the tuner's data preparation all take
an `Embedder`, so a collection can be built by sentence-transformers weights on this
machine, by the bundled multilingual C engine, or by a provider's API, and every path
gets normalized float32 vectors for the same registry name.

`kind` says whether the texts are queries or documents: models such as E5 and BGE are
trained with different prefixes for the two, and embedding both the same way costs them
several points of retrieval quality. Models without that distinction ignore it.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import Any, Literal

import numpy as np

TextKind = Literal["query", "document"]

# Counting units for a model whose tokenizer we do not have (a remote provider): a CJK
# character, a word or a punctuation mark each count as one token.
_UNITS = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uac00-\ud7af]|\w+|[^\w\s]")


def estimate_tokens(text: str) -> int:
    """Tokens a subword tokenizer makes of `text`, estimated from words and CJK characters
    (English words average about 1.3 subword tokens, so the estimate is scaled by that).
    Used only to size chunks for remote embedders, whose windows (512-8,192 tokens) leave
    room for the error."""
    units = _UNITS.findall(text)
    cjk = sum(1 for u in units if len(u) == 1 and ord(u) >= 0x3040)
    return cjk + round((len(units) - cjk) * 1.3)


def normalize(vecs: np.ndarray) -> np.ndarray:
    """Unit-length rows (cosine = dot product); zero rows stay zero."""
    vecs = np.asarray(vecs, dtype=np.float32)
    if vecs.size == 0:
        return vecs
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    out: np.ndarray = vecs / np.where(norms == 0, 1, norms)
    return out


def progress_bar(total: int, desc: str) -> Any:
    """A tqdm bar, as sentence-transformers shows for its own batches."""
    from tqdm import tqdm  # sentence-transformers' dependency; only when a bar is asked for

    return tqdm(total=total, desc=desc, unit="text")


class Embedder(ABC):
    """A registered embedder, loaded: `encode` gives one normalized float32 row per text."""

    name: str
    fingerprint: str
    provider: str = "sentence-transformers"

    @property
    @abstractmethod
    def dimension(self) -> int: ...

    @property
    def max_seq_length(self) -> int:
        return 512

    @abstractmethod
    def tokens(self, text: str) -> list[int]:
        """Token ids (or placeholders: only their number is used) without special tokens:
        the unit chunk sizes are counted in."""

    @abstractmethod
    def encode(
        self,
        texts: list[str],
        *,
        show_progress: bool = False,
        prompt: str | None = None,
        kind: TextKind = "document",
    ) -> np.ndarray: ...

    def ident(self) -> dict[str, str]:
        return {"embedder": self.name, "embedder_fp": self.fingerprint}
