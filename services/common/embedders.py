"""Load registered embedders once per process and encode with them.

Shared by rag_api (ingest, retrieve, /v1/embeddings) and embed_tuner (evaluation), so
every path produces identical vectors for the same registry name: normalized float32,
the same batch size and truncation.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from services.common.logs import quiet_libraries
from services.common.registry import Entry, Registry
from services.common.torch_setup import configure_torch, resolve_precision

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


@dataclass
class Embedder:
    name: str
    fingerprint: str
    model: SentenceTransformer
    batch_size: int = 32
    precision: str = "fp32"  # "bf16": autocast matmuls (see resolve_precision)
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
        """Token ids without special tokens: the unit chunk sizes are counted in."""
        with self._lock:
            ids: list[int] = self.model.tokenizer.encode(
                text, add_special_tokens=False, verbose=False
            )
        return ids

    def encode(
        self, texts: list[str], *, show_progress: bool = False, prompt: str | None = None
    ) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        kwargs: dict[str, Any] = {}
        if prompt:
            kwargs["prompt"] = prompt
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

    def ident(self) -> dict[str, str]:
        return {"embedder": self.name, "embedder_fp": self.fingerprint}


class EmbedderPool:
    """An LRU of loaded models: loading takes seconds, encoding milliseconds."""

    def __init__(
        self,
        registry: Registry,
        *,
        capacity: int = 3,
        device: str | None = None,
        precision: str = "auto",
    ):
        self.registry = registry
        self.capacity = capacity
        self.device = device
        self.precision = precision
        self._cache: OrderedDict[str, Embedder] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str) -> Embedder:
        with self._lock:
            entry = self.registry.get("embedder", name)
            key = f"{entry.name}:{entry.fingerprint}"
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            emb = load_embedder(entry, device=self.device, precision=self.precision)
            self._cache[key] = emb
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
            return emb


def load_embedder(entry: Entry, *, device: str | None = None, precision: str = "auto") -> Embedder:
    from sentence_transformers import SentenceTransformer

    quiet_libraries()
    configure_torch()
    dev = device or _default_device()
    model = SentenceTransformer(str(entry.model_path), device=dev)
    return Embedder(
        name=entry.name,
        fingerprint=entry.fingerprint,
        model=model,
        precision=resolve_precision(precision, dev),
    )


def _default_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "cpu"
