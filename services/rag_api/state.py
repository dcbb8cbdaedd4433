"""Long-lived objects of one API process, built once from settings."""

from __future__ import annotations

import json
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
        model = deployed_model(s) or s.llm_model
        return cls(
            settings=s,
            registry=registry,
            store=store,
            pool=pool,
            retriever=Retriever(store, pool, s.default_embedder),
            llm=LlmHolder(
                LlmTarget(
                    base_url=s.llm_base_url,
                    model=model,
                    api_key=s.llm_api_key.get_secret_value(),
                    timeout_s=s.llm_timeout_s,
                )
            ),
        )


def deployed_model(s: RagSettings) -> str | None:
    """The model `tunestack llm deploy` switched to, if it is on the configured server.

    Written by routes_llm_admin on a switch; honoured only for the same base URL, so
    pointing the API at another server (TUNESTACK_RAG_LLM_BASE_URL) is never overridden.
    """
    path = s.home_dir / "run" / "llm-deployment.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("base_url") != s.llm_base_url:
        return None
    model = data.get("model")
    return str(model) if model else None
