"""Which vector store engine a process talks to (TUNESTACK_VECTOR_STORE), apart from
store.py so that the engines import the bookkeeping and nothing imports back."""

from __future__ import annotations

from services.common.settings import CommonSettings
from services.rag_api.store import VectorStore
from services.rag_api.store_chroma import ChromaStore
from services.rag_api.store_milvus import MilvusStore


def open_store(settings: CommonSettings) -> VectorStore:
    """The engine the settings name (its client library is imported on first use)."""
    if settings.vector_store == "milvus":
        token = settings.milvus_token.get_secret_value() if settings.milvus_token else None
        return MilvusStore(settings.milvus_uri, token=token)
    return ChromaStore(settings.chroma_url)
