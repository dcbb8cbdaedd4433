"""The long-lived objects the RAG service layer works with, built once from settings.

The API keeps one RagContext for its process (routes and background jobs share its
loaded embedders); the CLI builds one for a command (`tunestack ingest`, `reindex`) so it
runs the very same service functions, taking the same cross-process collection lock.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.common.embedders import EmbedderPool
from services.common.locks import collection_lock
from services.common.registry import Registry
from services.rag_api.llm import LlmHolder, LlmTarget
from services.rag_api.retrieval import Retriever
from services.rag_api.settings import RagSettings
from services.rag_api.store import VectorStore
from services.rag_api.store_engines import open_store

DEPLOYMENT_FILE = ("run", "llm-deployment.json")


@dataclass
class RagContext:
    settings: RagSettings
    registry: Registry
    store: VectorStore
    pool: EmbedderPool
    retriever: Retriever
    llm: LlmHolder
    _redis: Any = field(default=None, repr=False)  # the queue's Redis, for shared locks

    @classmethod
    def from_settings(cls, s: RagSettings, *, pool_capacity: int = 3) -> RagContext:
        registry = Registry(s.home_dir)
        store = open_store(s)
        pool = EmbedderPool(registry, precision=s.embed_precision, capacity=pool_capacity)
        base_url, model = deployed_target(s) or (s.llm_base_url, s.default_llm)
        return cls(
            settings=s,
            registry=registry,
            store=store,
            pool=pool,
            retriever=Retriever(store, pool, s.default_embedder),
            llm=LlmHolder(llm_target(s, base_url, model), follow=DeploymentFollower(s)),
        )

    def collection_lock(
        self, collection: str, waiting: Callable[[], None] | None = None
    ) -> AbstractContextManager[None]:
        """The lock every writer of `collection` takes, in this process and any other."""
        return self.shared_lock(
            f"collection-{collection}",
            collection_lock(self.settings.home_dir, collection, waiting),
            waiting=waiting,
            what=f"Collection '{collection}'",
        )

    @contextmanager
    def shared_lock(
        self,
        name: str,
        local: AbstractContextManager[None],
        *,
        timeout: float | None = None,
        waiting: Callable[[], None] | None = None,
        what: str = "this resource",
    ) -> Iterator[None]:
        """`local` (an flock on TUNESTACK_HOME, which every process on this host honours),
        and with a queue first the same lock in Redis, which processes on other machines
        honour (services.rag_api.redis_locks)."""
        url = self.settings.queue_url
        if url is None:
            with local:
                yield
            return
        from services.rag_api.redis_locks import redis_lock  # redis: only with a queue

        if self._redis is None:
            from redis import Redis  # only with a queue

            self._redis = Redis.from_url(url.get_secret_value(), socket_connect_timeout=5)
        with redis_lock(self._redis, name, timeout=timeout, waiting=waiting, what=what), local:
            yield

    @property
    def uploads(self) -> Path:
        return self.settings.home_dir / "uploads"


def llm_target(s: RagSettings, base_url: str, model: str) -> LlmTarget:
    """A target on a configured server; the configured key goes only to its own server."""
    own = base_url.rstrip("/") == s.llm_base_url.rstrip("/")
    return LlmTarget(
        base_url=base_url,
        model=model,
        api_key=s.llm_api_key.get_secret_value() if own else "sk-no-key-required",
        timeout_s=s.llm_timeout_s,
    )


class DeploymentFollower:
    """LlmHolder's `follow`: the deployment record's target each time the record changes.
    A deploy that ran in a queue worker, or on another API replica sharing
    TUNESTACK_HOME, switches this API within a second, with no call to each replica."""

    def __init__(self, s: RagSettings) -> None:
        self._s = s
        self._seen = self._stamp()

    def _stamp(self) -> int | None:
        try:
            return deployment_path(self._s.home_dir).stat().st_mtime_ns
        except OSError:
            return None

    def __call__(self) -> LlmTarget | None:
        stamp = self._stamp()
        if stamp == self._seen:
            return None
        self._seen = stamp
        found = deployed_target(self._s)
        return None if found is None else llm_target(self._s, *found)


def deployment_path(home: Path) -> Path:
    return home.joinpath(*DEPLOYMENT_FILE)


def deployed_target(s: RagSettings) -> tuple[str, str] | None:
    """(base_url, model) that `tunestack llm deploy` switched to, if that server is still
    one of the configured ones (services.rag_api.llm_switch.target_for's list): an Ollama
    deploy in compose (http://ollama:11434/v1) survives an API restart, while a server
    removed from the settings, or a record made while the API pointed at another default
    server, is never followed.
    """
    try:
        data = json.loads(deployment_path(s.home_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not data.get("model") or not data.get("base_url"):
        return None
    url = str(data["base_url"]).rstrip("/")
    # written when the API was configured with another default server: not ours to follow
    if str(data.get("configured", url)).rstrip("/") != s.llm_base_url.rstrip("/"):
        return None
    return (url, str(data["model"])) if url in s.llm_server_urls else None
