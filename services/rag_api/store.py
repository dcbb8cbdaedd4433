"""Chroma access: one physical collection per (collection name, embedder fingerprint).

Vectors from different embedders are not comparable, so a collection is bound to the
embedder that built it. The physical name is `<name>__<fingerprint>` (a reindexed build:
`<name>__<fingerprint>__r<hex>`); its metadata records the collection name and the
embedder's registry name, so builds are found by metadata, never by name.

A build made from scratch (reindex) is first a staging collection (metadata
`tunestack: "building"`, invisible to `builds`), and is published by one metadata change
once complete: a half-built or crashed build is never served, and the build it replaces
is deleted only after the new one is visible. Chroma's own errors leave `call` as our
error types (404, 409, 422, 429, 503), never as a bare 500.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlparse

import httpx

from services.common.errors import (
    BadInput,
    Busy,
    Conflict,
    EmbedderMismatch,
    NotFound,
    ServiceUnavailable,
    TunestackError,
)

SEP = "__"
READY = "1"  # metadata `tunestack` of a build that is served
BUILDING = "building"  # ... of a staging build (reindex in progress, or crashed)
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
    id: str = ""  # Chroma's collection id: a build deleted and made again gets a new one

    @property
    def version(self) -> str:
        return str(self.metadata.get("version", ""))

    @property
    def key(self) -> str:
        """The logical build (collection, embedder fingerprint), whatever its physical name."""
        return f"{self.name}{SEP}{self.embedder_fp}"

    @property
    def stale(self) -> str | None:
        """Why this build lags behind another build of its collection, if it does."""
        return str(self.metadata["stale"]) if self.metadata.get("stale") else None


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
        """Run a Chroma call: connection failures become a 503 naming Chroma, Chroma's own
        errors our types (see `chroma_error`)."""
        try:
            return fn(*args, **kwargs)
        except TunestackError:
            raise
        except Exception as e:
            if _is_connection_error(e):
                self._client = None
                raise self._down(e) from e
            mapped = chroma_error(e)
            if mapped is not None:
                raise mapped from e
            raise

    def heartbeat(self) -> bool:
        try:
            self.call(lambda: self.client.heartbeat())
            return True
        except ServiceUnavailable:
            return False

    # ---- builds -----------------------------------------------------------------
    def _physical(self) -> list[Any]:
        return list(self.call(lambda: self.client.list_collections()))

    def builds(self, name: str | None = None) -> list[Build]:
        """Published builds (one per collection and embedder fingerprint)."""
        return [b for b in self._builds(name) if b.metadata.get("tunestack") == READY]

    def _builds(self, name: str | None, *, duplicates: bool = False) -> list[Build]:
        """Every tunestack collection (staging ones too); of two published builds of one
        (name, fingerprint) (a publish cut off before the old one was deleted) the newer,
        unless `duplicates`."""
        out: list[Build] = []
        for c in self._physical():
            md = dict(c.metadata or {})
            if md.get("tunestack") not in (READY, BUILDING) or (name and md.get("name") != name):
                continue
            b = Build(md["name"], md["embedder"], md["embedder_fp"], c.name, md, str(c.id))
            out.append(b)
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
        physical = f"{name}{SEP}{embedder_fp}"
        md = _metadata(name, embedder, embedder_fp, dimension, extra, READY)
        col = self.call(lambda: self._make(physical, md))
        return Build(name, embedder, embedder_fp, physical, dict(col.metadata or md), str(col.id))

    def _make(self, physical: str, md: dict[str, Any]) -> Any:
        return self.client.get_or_create_collection(
            physical,
            metadata=md,
            configuration={"hnsw": {"space": "cosine"}},
            embedding_function=None,
        )

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
        physical = f"{name}{SEP}{embedder_fp}{SEP}r{os.getpid()}-{uuid.uuid4().hex[:8]}"
        md = _metadata(name, embedder, embedder_fp, dimension, extra, BUILDING)
        md["pid"] = os.getpid()
        col = self.call(lambda: self._make(physical, md))
        return Build(name, embedder, embedder_fp, physical, md, str(col.id))

    def publish(self, staged: Build) -> Build:
        """Make a complete staged build the served one for its (name, embedder), then delete
        the build it replaces: from the metadata change on, readers see the new build (the
        old one stays readable until then), never a missing or half-built one."""
        old = [b for b in self.builds(staged.name) if b.embedder_fp == staged.embedder_fp]
        md = {k: v for k, v in staged.metadata.items() if k != "pid"}
        md |= {"tunestack": READY, "version": uuid.uuid4().hex, "published": time.time()}
        col = self.collection(staged)
        self.call(lambda: col.modify(metadata=md))
        for b in old:
            if b.physical != staged.physical:
                self.call(self.client.delete_collection, b.physical)
        s = staged
        return Build(s.name, s.embedder, s.embedder_fp, s.physical, md, s.id)

    def sweep(self, name: str) -> list[str]:
        """Delete what interrupted writers of `name` left: staging builds and the older of
        two published builds of one embedder. Call it holding the collection's lock (every
        writer holds it, so nothing found here is still being written)."""
        keep = {b.physical for b in self.builds(name)}
        gone = [b.physical for b in self._builds(name, duplicates=True) if b.physical not in keep]
        for physical in gone:
            self.call(self.client.delete_collection, physical)
        return gone

    def mark_stale(self, build: Build, reason: str) -> None:
        """Record that `build` lacks changes made to another build of its collection
        (shown by `collections list`; a reindex from the changed build clears it)."""
        col = self.collection(build)
        md = dict(col.metadata or build.metadata)
        if md.get("stale"):
            return
        md["stale"] = reason
        self.call(lambda: col.modify(metadata=md))

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
        """Delete every build of `name` (staging ones too); the number of published ones."""
        builds = self._builds(name, duplicates=True)
        for b in builds:
            self.call(self.client.delete_collection, b.physical)
        return len({b.key for b in builds if b.metadata.get("tunestack") == READY})

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


_CHROMA_HINT = "Check Chroma's log (`tunestack logs chroma`) and send the request again."


def chroma_error(e: BaseException) -> TunestackError | None:
    """One of our errors for an error Chroma answered with (None: not Chroma's).

    A collection gone meanwhile is 404, a name clash 409, Chroma's rate limit 429, a
    request Chroma refuses (a bad argument, a wrong dimension, a batch too large) 422,
    and Chroma failing or refusing our credentials 503 naming Chroma.
    """
    status: int | None = None
    message = str(e).strip() or type(e).__name__
    if type(e).__module__.startswith("chromadb") and callable(getattr(e, "code", None)):
        try:
            status = int(e.code())  # type: ignore[attr-defined]
        except Exception:
            status = 500
        if status == 400 and "already exists" in message:  # sent as a plain ChromaError
            status = 409
    elif isinstance(e, httpx.HTTPStatusError):
        status = e.response.status_code
    elif type(e) is Exception and _raised_in_chromadb(e):
        # an error kind the client does not know: it raises the response body as is
        try:
            body = json.loads(message.split(" (trace ID:")[0])
            kind, message = str(body.get("error", "")), str(body.get("message", message))
        except (ValueError, AttributeError):
            kind = ""
        status = 404 if "NotFound" in kind else 409 if "Unique" in kind else 503
    if status is None:
        return None
    if status == 404:
        return NotFound(
            f"Chroma no longer has it: {message}",
            hint="It was deleted or rebuilt meanwhile; `tunestack collections list` shows "
            "what exists. Send the request again.",
        )
    if status == 409:
        return Conflict(f"Chroma refused a duplicate: {message}", hint=_CHROMA_HINT)
    if status == 429:
        return Busy(f"Chroma is rate-limiting requests: {message}", hint="Retry shortly.")
    if status in (401, 403):
        return ServiceUnavailable(
            "chroma",
            f"Chroma refused this service's credentials ({status}): {message}",
            hint="Check the Chroma settings (TUNESTACK_RAG_CHROMA_URL and its auth).",
        )
    if 400 <= status < 500:
        return BadInput(f"Chroma refused the request: {message}", hint=_CHROMA_HINT)
    return ServiceUnavailable("chroma", f"Chroma failed: {message}", hint=_CHROMA_HINT)


def _raised_in_chromadb(e: BaseException) -> bool:
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and str(tb.tb_frame.f_globals.get("__name__", "")).startswith("chromadb")


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
