"""Chroma access: one physical collection per (collection name, embedder fingerprint).

Vectors from different embedders are not comparable, so a collection is bound to the
embedder that built it. The physical name is `<name>__<fingerprint>`; its metadata
records the embedder's registry name so a mismatch can be explained and fixed.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlparse

import httpx

from services.common.errors import BadInput, EmbedderMismatch, NotFound, ServiceUnavailable

SEP = "__"
_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,60}[A-Za-z0-9])?$")
T = TypeVar("T")


def validate_collection_name(name: str) -> str:
    if not _NAME.match(name) or SEP in name:
        raise BadInput(
            f"'{name}' is not a valid collection name.",
            hint="Use 1-62 letters, digits, '.', '_' or '-', starting and ending with a "
            "letter or digit, without '__'.",
        )
    return name


@dataclass(frozen=True)
class Build:
    """One physical Chroma collection: a logical collection embedded by one embedder."""

    name: str
    embedder: str
    embedder_fp: str
    physical: str
    metadata: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.metadata.get("version", ""))


class VectorStore:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._client: Any = None

    # ---- connection -------------------------------------------------------------
    def _down(self, e: Exception) -> ServiceUnavailable:
        return ServiceUnavailable(
            "chroma",
            f"Chroma is not reachable at {self.url} ({type(e).__name__}).",
            hint="Start the stack with `tunestack up` (or check TUNESTACK_RAG_CHROMA_URL).",
        )

    @property
    def client(self) -> Any:
        if self._client is None:
            import chromadb

            u = urlparse(self.url)
            try:
                self._client = chromadb.HttpClient(
                    host=u.hostname or "127.0.0.1",
                    port=u.port or (443 if u.scheme == "https" else 8000),
                    ssl=u.scheme == "https",
                )
            except Exception as e:
                raise self._down(e) from e
        return self._client

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a Chroma call, turning connection failures into a 503 naming Chroma."""
        try:
            return fn(*args, **kwargs)
        except (NotFound, BadInput, EmbedderMismatch):
            raise
        except Exception as e:
            if _is_connection_error(e):
                self._client = None
                raise self._down(e) from e
            raise

    def heartbeat(self) -> bool:
        try:
            self.call(lambda: self.client.heartbeat())
            return True
        except ServiceUnavailable:
            return False

    # ---- builds -----------------------------------------------------------------
    def builds(self, name: str | None = None) -> list[Build]:
        cols = self.call(lambda: self.client.list_collections())
        out = []
        for c in cols:
            md = dict(c.metadata or {})
            if md.get("tunestack") != "1" or (name and md.get("name") != name):
                continue
            out.append(Build(md["name"], md["embedder"], md["embedder_fp"], c.name, md))
        return sorted(out, key=lambda b: (b.name, b.embedder))

    def resolve(
        self, name: str, embedder: str | None, embedder_fp: str | None, default_embedder: str
    ) -> Build:
        """Pick the build to query, refusing an embedder the collection was not built with."""
        validate_collection_name(name)
        builds = self.builds(name)
        if not builds:
            have = sorted({b.name for b in self.builds()})
            raise NotFound(
                f"Collection '{name}' does not exist.",
                hint=(f"Existing collections: {', '.join(have)}. " if have else "")
                + f"Create it with `tunestack ingest PATH --collection {name}`.",
            )
        if embedder is None:
            for b in builds:
                if b.embedder == default_embedder:
                    return b
            return max(builds, key=lambda b: str(b.metadata.get("created", "")))
        for b in builds:
            if b.embedder == embedder and (embedder_fp is None or b.embedder_fp == embedder_fp):
                return b
        built = ", ".join(f"'{b.embedder}' ({b.embedder_fp})" for b in builds)
        same_name = [b for b in builds if b.embedder == embedder]
        why = (
            f"embedder '{embedder}' has changed since (fingerprint {embedder_fp})"
            if same_name
            else f"you asked for embedder '{embedder}'"
        )
        raise EmbedderMismatch(
            f"Collection '{name}' was built with embedder {built}; {why}. "
            "Vectors from different embedders cannot be compared.",
            hint=f"Run `tunestack reindex {name} --embedder {embedder}` to build it for "
            "that embedder, or query without --embedder.",
        )

    def create(
        self,
        name: str,
        embedder: str,
        embedder_fp: str,
        dimension: int,
        extra: dict[str, Any] | None = None,
    ) -> Build:
        validate_collection_name(name)
        physical = f"{name}{SEP}{embedder_fp}"
        md = {
            "tunestack": "1",
            "name": name,
            "embedder": embedder,
            "embedder_fp": embedder_fp,
            "dimension": dimension,
            "version": uuid.uuid4().hex,
            **(extra or {}),
        }

        def make() -> Any:
            return self.client.get_or_create_collection(
                physical,
                metadata=md,
                configuration={"hnsw": {"space": "cosine"}},
                embedding_function=None,
            )

        col = self.call(make)
        return Build(name, embedder, embedder_fp, physical, dict(col.metadata or md))

    def collection(self, build: Build) -> Any:
        return self.call(
            lambda: self.client.get_collection(build.physical, embedding_function=None)
        )

    def touch(self, build: Build) -> str:
        """Bump the build's version so caches derived from it (BM25) are rebuilt."""
        md = {**build.metadata, "version": uuid.uuid4().hex}
        col = self.collection(build)
        self.call(lambda: col.modify(metadata=md))
        return str(md["version"])

    def version(self, build: Build) -> str:
        col = self.collection(build)
        return str((col.metadata or {}).get("version", ""))

    def count(self, build: Build) -> int:
        col = self.collection(build)
        return int(self.call(col.count))

    def delete(self, name: str) -> int:
        builds = self.builds(name)
        for b in builds:
            self.call(self.client.delete_collection, b.physical)
        return len(builds)

    def iter_records(
        self,
        build: Build,
        include: list[str],
        where: dict[str, Any] | None = None,
        page: int = 5000,
    ) -> Iterator[dict[str, Any]]:
        """Page through a collection: Chroma caps how much one `get` returns."""
        col = self.collection(build)
        offset = 0
        while True:
            res = self.call(col.get, where=where, include=include, limit=page, offset=offset)
            ids = res["ids"]
            if not ids:
                return
            for i, id_ in enumerate(ids):
                rec: dict[str, Any] = {"id": id_}
                for key in include:
                    vals = res.get(key)
                    rec[key] = vals[i] if vals is not None else None
                yield rec
            if len(ids) < page:
                return
            offset += page

    @property
    def max_batch(self) -> int:
        try:
            return int(self.call(lambda: self.client.get_max_batch_size()))
        except Exception:
            return 1000


def _is_connection_error(e: BaseException) -> bool:
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(
            cur,
            (
                httpx.ConnectError,
                httpx.ConnectTimeout,
                httpx.ReadTimeout,
                httpx.RemoteProtocolError,
                ConnectionError,
            ),
        ):
            return True
        text = str(cur)
        if "Could not connect" in text or "Connection refused" in text:
            return True
        cur = cur.__cause__ or cur.__context__
    return False
