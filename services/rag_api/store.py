"""The vector store behind retrieval: one physical collection per (collection name,
embedder fingerprint), on Chroma (the default) or Milvus (`TUNESTACK_VECTOR_STORE`).

Vectors from different embedders are not comparable, so a collection is bound to the
embedder that built it. Each physical collection carries metadata naming the collection
and the embedder's registry name, so builds are found by metadata, never by name.

A build made from scratch (reindex) is first a staging collection (metadata
`tunestack: "building"`, invisible to `builds`), and is published by one metadata change
once complete: a half-built or crashed build is never served, and the build it replaces
is deleted only after the new one is visible.

This module holds that bookkeeping once; an engine (store_chroma, store_milvus) supplies
the few primitives it rests on (list, make, drop and re-label physical collections; upsert,
delete, get, page through and search records) and maps its own errors to ours (404, 409,
422, 429, 503), never a bare 500.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from services.common.errors import BadInput, EmbedderMismatch, NotFound

SEP = "__"
READY = "1"  # metadata `tunestack` of a build that is served
BUILDING = "building"  # ... of a staging build (reindex in progress, or crashed)
MIN_RELEVANCE = "min_relevance"  # metadata: the relevance gate's threshold (rag calibrate)
_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,60}[A-Za-z0-9])?$")
T = TypeVar("T")
# the filter language every engine understands: {"key": value}, {"key": {"$ne": value}}
# and {"$and": [filter, ...]} (Chroma's own syntax; Milvus translates it)
Where = dict[str, Any]


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
    """One physical collection: a logical collection embedded by one embedder."""

    name: str
    embedder: str
    embedder_fp: str
    physical: str
    metadata: dict[str, Any]
    id: str = ""  # the engine's collection id: a build deleted and made again gets a new one

    @property
    def version(self) -> str:
        return str(self.metadata.get("version", ""))

    @property
    def key(self) -> str:
        """The logical build (collection, embedder fingerprint), whatever its physical name."""
        return f"{self.name}{SEP}{self.embedder_fp}"

    @property
    def min_relevance(self) -> float | None:
        """The relevance gate's calibrated threshold (`tunestack rag calibrate`), if any."""
        value = self.metadata.get(MIN_RELEVANCE)
        return float(value) if isinstance(value, (int, float)) and value > 0 else None

    @property
    def stale(self) -> str | None:
        """Why this build lags behind another build of its collection, if it does."""
        return str(self.metadata["stale"]) if self.metadata.get("stale") else None


@dataclass(frozen=True)
class Physical:
    """A physical collection as the engine lists it."""

    name: str
    id: str
    metadata: dict[str, Any]


@dataclass(frozen=True)
class Record:
    """A stored chunk as search returns it; `score` is the cosine similarity."""

    id: str
    document: str
    metadata: dict[str, Any]
    score: float = 0.0


class VectorStore(ABC):
    """Build bookkeeping over an engine's primitives (the abstract methods)."""

    engine = ""  # "chroma" | "milvus": health reports and error messages name it
    url = ""

    # ---- engine primitives ----------------------------------------------------------
    @abstractmethod
    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run an engine call, mapping its failures to our errors (503 when it is down)."""

    @abstractmethod
    def heartbeat(self) -> bool: ...

    @abstractmethod
    def _list(self, name: str | None = None) -> list[Physical]:
        """Physical collections (an engine may leave out those not of collection `name`)."""

    @abstractmethod
    def _make(self, physical: str, metadata: dict[str, Any]) -> Physical:
        """Create `physical` (cosine space) unless it exists (then: as it is)."""

    @abstractmethod
    def _relabel(self, build: Build, metadata: dict[str, Any]) -> None:
        """Replace the collection's metadata (one atomic change: it is how builds publish)."""

    @abstractmethod
    def _metadata_of(self, build: Build) -> dict[str, Any]: ...

    @abstractmethod
    def drop(self, physical: str) -> None: ...

    @abstractmethod
    def count(self, build: Build) -> int: ...

    @abstractmethod
    def upsert(
        self,
        build: Build,
        ids: Sequence[str],
        embeddings: Any,
        documents: Sequence[str],
        metadatas: Sequence[dict[str, Any]],
    ) -> None:
        """Write records, replacing those with the same ids (in as few calls as allowed)."""

    @abstractmethod
    def delete_where(self, build: Build, where: Where) -> None: ...

    @abstractmethod
    def get(self, build: Build, ids: Sequence[str]) -> list[Record]:
        """The records with these ids that exist (any order)."""

    @abstractmethod
    def iter_records(self, build: Build, include: list[str]) -> Iterator[dict[str, Any]]:
        """Every record as {"id", and each of include: "documents", "metadatas"}."""

    @abstractmethod
    def search(self, build: Build, vector: list[float], k: int) -> list[Record]:
        """The k records nearest to `vector` by cosine, best first."""

    def physical_name(self, name: str, embedder_fp: str, staged: str = "") -> str:
        """The engine's name for a build (an engine with a narrower alphabet overrides)."""
        return f"{name}{SEP}{embedder_fp}" + (f"{SEP}{staged}" if staged else "")

    # ---- builds -------------------------------------------------------------------
    def builds(self, name: str | None = None) -> list[Build]:
        """Published builds (one per collection and embedder fingerprint)."""
        return [b for b in self._builds(name) if b.metadata.get("tunestack") == READY]

    def _builds(self, name: str | None, *, duplicates: bool = False) -> list[Build]:
        """Every tunestack collection (staging ones too); of two published builds of one
        (name, fingerprint) (a publish cut off before the old one was deleted) the newer,
        unless `duplicates`."""
        out: list[Build] = []
        for c in self._list(name):
            md = c.metadata
            if md.get("tunestack") not in (READY, BUILDING) or (
                name is not None and md.get("name") != name
            ):
                continue
            out.append(Build(md["name"], md["embedder"], md["embedder_fp"], c.name, md, c.id))
        if not duplicates:
            newest: dict[str, Build] = {}
            for b in out:
                if b.metadata.get("tunestack") != READY:
                    continue
                cur = newest.get(b.key)
                if cur is None or _published(b) > _published(cur):
                    newest[b.key] = b
            out = [b for b in out if b.metadata.get("tunestack") != READY or newest[b.key] is b]
        return sorted(out, key=lambda b: (b.name, b.embedder, b.physical))

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
        """The build of `name` for this embedder: the existing one, or a new empty one."""
        validate_collection_name(name)
        for b in self.builds(name):
            if b.embedder_fp == embedder_fp:
                return b
        physical = self.physical_name(name, embedder_fp)
        md = _metadata(name, embedder, embedder_fp, dimension, extra, READY)
        made = self._make(physical, md)
        return Build(name, embedder, embedder_fp, physical, made.metadata or md, made.id)

    def stage(
        self,
        name: str,
        embedder: str,
        embedder_fp: str,
        dimension: int,
        extra: dict[str, Any] | None = None,
    ) -> Build:
        """A new, unpublished build: `builds` and `resolve` do not see it until `publish`.
        Its name carries this process's pid (a leftover names who left it)."""
        validate_collection_name(name)
        physical = self.physical_name(name, embedder_fp, f"r{os.getpid()}-{uuid.uuid4().hex[:8]}")
        md = _metadata(name, embedder, embedder_fp, dimension, extra, BUILDING)
        md["pid"] = os.getpid()
        return Build(name, embedder, embedder_fp, physical, md, self._make(physical, md).id)

    def publish(self, staged: Build) -> Build:
        """Make a complete staged build the served one for its (name, embedder), then delete
        the build it replaces: from the metadata change on, readers see the new build (the
        old one stays readable until then), never a missing or half-built one."""
        old = [b for b in self.builds(staged.name) if b.embedder_fp == staged.embedder_fp]
        md = {k: v for k, v in staged.metadata.items() if k != "pid"}
        md |= {"tunestack": READY, "version": uuid.uuid4().hex, "published": time.time()}
        self._relabel(staged, md)
        for b in old:
            if b.physical != staged.physical:
                self.drop(b.physical)
        s = staged
        return Build(s.name, s.embedder, s.embedder_fp, s.physical, md, s.id)

    def sweep(self, name: str) -> list[str]:
        """Delete what interrupted writers of `name` left: staging builds and the older of
        two published builds of one embedder. Call it holding the collection's lock (every
        writer holds it, so nothing found here is still being written)."""
        keep = {b.physical for b in self.builds(name)}
        gone = [b.physical for b in self._builds(name, duplicates=True) if b.physical not in keep]
        for physical in gone:
            self.drop(physical)
        return gone

    def mark_stale(self, build: Build, reason: str) -> None:
        """Record that `build` lacks changes made to another build of its collection
        (shown by `collections list`; a reindex from the changed build clears it)."""
        md = self._metadata_of(build)
        if md.get("stale"):
            return
        self._relabel(build, {**md, "stale": reason})

    def set_min_relevance(self, build: Build, threshold: float | None) -> None:
        """Record (None: forget) the relevance gate's threshold for `build`: a cosine
        similarity of its embedder, so it belongs to the build, not to the collection."""
        # 0.0, not a removed key: an engine may merge metadata rather than replace it
        md = {**self._metadata_of(build), MIN_RELEVANCE: float(threshold or 0.0)}
        self._relabel(build, md)

    def touch(self, build: Build) -> str:
        """Bump the build's version so caches derived from it (BM25) are rebuilt."""
        md = {**build.metadata, "version": uuid.uuid4().hex}
        self._relabel(build, md)
        return str(md["version"])

    def version(self, build: Build) -> str:
        return str(self._metadata_of(build).get("version", ""))

    def delete(self, name: str) -> int:
        """Delete every build of `name` (staging ones too); the number of published ones."""
        builds = self._builds(name, duplicates=True)
        for b in builds:
            self.drop(b.physical)
        return len({b.key for b in builds if b.metadata.get("tunestack") == READY})


def _metadata(
    name: str,
    embedder: str,
    embedder_fp: str,
    dimension: int,
    extra: dict[str, Any] | None,
    state: str,
) -> dict[str, Any]:
    return {
        "tunestack": state,
        "name": name,
        "embedder": embedder,
        "embedder_fp": embedder_fp,
        "dimension": dimension,
        "version": uuid.uuid4().hex,
        **(extra or {}),
    }


def _published(b: Build) -> float:
    try:
        return float(b.metadata.get("published", 0.0))
    except (TypeError, ValueError):
        return 0.0
