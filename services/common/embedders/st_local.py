"""sentence-transformers weights on this machine: the bundled MiniLM and every tuned
embedder (the only kind `embed tune` trains)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from services.common.embedders.base import Embedder, TextKind
from services.common.logs import quiet_libraries
from services.common.torch_setup import configure_torch, resolve_precision

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


@dataclass
class SentenceTransformerEmbedder(Embedder):
    name: str
    fingerprint: str
    model: SentenceTransformer
    batch_size: int = 32
    precision: str = "fp32"  # "bf16": autocast matmuls (see resolve_precision)
    provider: str = "sentence-transformers"
    # One call at a time: the fast tokenizer's padding/truncation settings are state that
    # every call sets, so two threads (a query and an ingest, two /v1/embeddings) could
    # pad each other's batches to the wrong length (a 500 under load).
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def dimension(self) -> int:
        model = self.model
        get = getattr(model, "get_embedding_dimension", None)
        return int((get() if get else model.get_sentence_embedding_dimension()) or 0)

    @property
    def max_seq_length(self) -> int:
        return int(self.model.max_seq_length or 0)

    def tokens(self, text: str) -> list[int]:
        with self._lock:
            ids: list[int] = self.model.tokenizer.encode(
                text, add_special_tokens=False, verbose=False
            )
        return ids

    def _prompt_name(self, kind: TextKind) -> str | None:
        """The model's own prompt for this kind of text, when it was saved with one (E5,
        BGE and similar models list "query"/"document" or "passage" prompts)."""
        prompts = getattr(self.model, "prompts", None) or {}
        names = ("query",) if kind == "query" else ("document", "passage")
        return next((n for n in names if prompts.get(n)), None)

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
        kwargs: dict[str, Any] = {}
        if prompt:
            kwargs["prompt"] = prompt
        elif name := self._prompt_name(kind):
            kwargs["prompt_name"] = name
        import torch

        device = str(self.model.device).split(":")[0]
        autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=self.precision == "bf16")
        with self._lock, autocast:
            vecs = self.model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=show_progress,
                **kwargs,
            )
        return np.asarray(vecs, dtype=np.float32)


def load(name: str, fingerprint: str, path: str, *, device: str | None, precision: str):
    from sentence_transformers import SentenceTransformer  # heavy: only when loading

    quiet_libraries()
    configure_torch()
    dev = device or _default_device()
    model = SentenceTransformer(path, device=dev)
    return SentenceTransformerEmbedder(
        name=name,
        fingerprint=fingerprint,
        model=model,
        precision=resolve_precision(precision, dev),
    )


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
