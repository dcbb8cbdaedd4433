"""The long-lived objects the RAG service layer works with, built once from settings.

The API keeps one RagContext for its process (routes and background jobs share its
loaded embedders); the CLI builds one for a command (`tunestack ingest`, `reindex`) so it
runs the very same service functions, taking the same cross-process collection lock.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from services.common.embedders import EmbedderPool
from services.common.locks import collection_lock
from services.common.registry import Registry
from services.rag_api.llm import LlmHolder, LlmTarget
from services.rag_api.retrieval import Retriever
from services.rag_api.settings import RagSettings
from services.rag_api.store import VectorStore

DEPLOYMENT_FILE = ("run", "llm-deployment.json")


@dataclass
class RagContext:
    settings: RagSettings
    registry: Registry
    store: VectorStore
    pool: EmbedderPool
    retriever: Retriever
    llm: LlmHolder

    @classmethod
    def from_settings(cls, s: RagSettings, *, pool_capacity: int = 3) -> RagContext:
        registry = Registry(s.home_dir)
        store = VectorStore(s.chroma_url)
        pool = EmbedderPool(registry, precision=s.embed_precision, capacity=pool_capacity)
        return cls(
            settings=s,
            registry=registry,
            store=store,
            pool=pool,
            retriever=Retriever(store, pool, s.default_embedder),
            llm=LlmHolder(
                LlmTarget(
                    base_url=s.llm_base_url,
                    model=deployed_model(s) or s.default_llm,
                    api_key=s.llm_api_key.get_secret_value(),
                    timeout_s=s.llm_timeout_s,
                )
            ),
        )

    def collection_lock(
        self, collection: str, waiting: Callable[[], None] | None = None
    ) -> AbstractContextManager[None]:
        """The lock every writer of `collection` takes, in this process and any other."""
        return collection_lock(self.settings.home_dir, collection, waiting)

    @property
    def uploads(self) -> Path:
        return self.settings.home_dir / "uploads"


def deployment_path(home: Path) -> Path:
    return home.joinpath(*DEPLOYMENT_FILE)


def deployed_model(s: RagSettings) -> str | None:
    """The model `tunestack llm deploy` switched to, if it is on the configured server.

    Written by a switch (services.rag_api.llm_switch); honoured only for the same base URL,
    so pointing the API at another server (TUNESTACK_RAG_LLM_BASE_URL) is never overridden.
    """
    try:
        data = json.loads(deployment_path(s.home_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("base_url") != s.llm_base_url:
        return None
    model = data.get("model")
    return str(model) if model else None
