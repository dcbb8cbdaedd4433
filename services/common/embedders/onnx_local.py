"""A sentence-transformers embedder exported to ONNX with dynamic int8 weights, run by
onnxruntime (`tunestack embed quantize`): the same tokenizer, window, mean pooling and
normalization as the sentence-transformers model it came from, about twice as fast on a
CPU without native bf16, at a bounded loss of quality (see the README's table).

No torch at run time: the fast tokenizer's own file (`tokenizers`) and one ONNX session.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from services.common.embedders.base import Embedder, TextKind, normalize

MODEL_FILE = "model_int8.onnx"
BATCH = 32


class OnnxInt8Embedder(Embedder):
    provider = "onnx-int8"

    def __init__(self, name: str, fingerprint: str, folder: Path, max_seq_length: int) -> None:
        import onnxruntime as ort  # chromadb's dependency too
        from tokenizers import Tokenizer

        self.name = name
        self.fingerprint = fingerprint
        self._window = max_seq_length
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tok.enable_truncation(max_length=max_seq_length)
        tok.no_padding()
        self._tok = tok
        self._plain = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._plain.no_truncation()
        self._plain.no_padding()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = os.cpu_count() or 1
        self._session = ort.InferenceSession(
            str(folder / MODEL_FILE), opts, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._dim = int(self._session.get_outputs()[0].shape[-1])
        self._lock = threading.Lock()

    @property
    def dimension(self) -> int:
        return self._dim

    @property
    def max_seq_length(self) -> int:
        return self._window

    def tokens(self, text: str) -> list[int]:
        ids: list[int] = self._plain.encode(text, add_special_tokens=False).ids
        return ids

    def encode(
        self,
        texts: list[str],
        *,
        show_progress: bool = False,
        prompt: str | None = None,
        kind: TextKind = "document",
    ) -> np.ndarray:
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        if prompt:
            texts = [prompt + t for t in texts]
        # sort by length so each batch pads little (as sentence-transformers does)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for s in range(0, len(texts), BATCH):
            idx = order[s : s + BATCH]
            out[idx] = self._batch([texts[i] for i in idx])
        return normalize(out)

    def _batch(self, texts: list[str]) -> np.ndarray:
        encs = self._tok.encode_batch(texts)
        n = max(len(e.ids) for e in encs)
        ids = np.zeros((len(encs), n), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for i, e in enumerate(encs):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
            types[i, : len(e.ids)] = e.type_ids
        feed: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        with self._lock:
            hidden = self._session.run(None, {k: v for k, v in feed.items() if k in self._inputs})[
                0
            ]
        m = mask[..., None].astype(np.float32)
        pooled: np.ndarray = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        return pooled
