"""Long-lived objects of one API process, built once from settings."""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field

from services.common.embedders import EmbedderPool
from services.common.registry import Registry
from services.rag_api.llm import LlmHolder, LlmTarget
from services.rag_api.retrieval import Retriever
from services.rag_api.settings import RagSettings
from services.rag_api.store import VectorStore


@dataclass
class AppState:
    settings: RagSettings
    registry: Registry
    store: VectorStore
    pool: EmbedderPool
    retriever: Retriever
    llm: LlmHolder
    ingest_locks: defaultdict[str, threading.Lock] = field(
        default_factory=lambda: defaultdict(threading.Lock)
    )

    @classmethod
    def from_settings(cls, s: RagSettings) -> AppState:
        registry = Registry(s.home_dir)
        store = VectorStore(s.chroma_url)
        pool = EmbedderPool(registry, precision=s.embed_precision)
        return cls(
            settings=s,
            registry=registry,
            store=store,
            pool=pool,
            retriever=Retriever(store, pool, s.default_embedder),
            llm=LlmHolder(
                LlmTarget(
                    base_url=s.llm_base_url,
                    model=s.llm_model,
                    api_key=s.llm_api_key.get_secret_value(),
                    timeout_s=s.llm_timeout_s,
                )
            ),
        )
