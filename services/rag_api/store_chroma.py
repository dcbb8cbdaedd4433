"""Chroma as the vector store (the default): chromadb's HTTP client against `chroma run`
(local mode) or the compose/Helm Chroma service.

Build metadata is the Chroma collection's own metadata; a publish is one `modify`. Chroma's
errors leave `call` as ours (see `chroma_error`), never as a bare 500.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar
from urllib.parse import urlparse

import httpx

from services.common.errors import (
    BadInput,
    Busy,
    Conflict,
    NotFound,
    ServiceUnavailable,
    TunestackError,
)
from services.rag_api.store import Build, Physical, Record, VectorStore, Where

T = TypeVar("T")


class ChromaStore(VectorStore):
    engine = "chroma"

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._client: Any = None
        # collection handles by Chroma id: a query then costs one round trip, not two
        # (a build made again has a new id, so a handle never outlives its collection)
        self._handles: dict[str, Any] = {}
        self._lock = threading.Lock()

    # ---- connection -------------------------------------------------------------
    def _down(self, e: Exception) -> ServiceUnavailable:
        return ServiceUnavailable(
            "chroma",
            f"Chroma is not reachable at {self.url} ({type(e).__name__}).",
            hint="Start the stack with `tunestack up` (or check TUNESTACK_CHROMA_URL).",
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

    # ---- physical collections ---------------------------------------------------
    def _list(self, name: str | None = None) -> list[Physical]:
        cols = self.call(lambda: self.client.list_collections())
        return [Physical(c.name, str(c.id), dict(c.metadata or {})) for c in cols]

    def _make(self, physical: str, metadata: dict[str, Any]) -> Physical:
        col = self.call(
            lambda: self.client.get_or_create_collection(
                physical,
                metadata=metadata,
                configuration={"hnsw": {"space": "cosine"}},
                embedding_function=None,
            )
        )
        return Physical(col.name, str(col.id), dict(col.metadata or metadata))

    def collection(self, build: Build) -> Any:
        """Chroma's collection object of `build` (404 once it is gone)."""
        return self.call(
            lambda: self.client.get_collection(build.physical, embedding_function=None)
        )

    def _handle(self, build: Build) -> Any:
        """`collection`, kept per Chroma id for the per-query calls (search, get): a query
        then costs one round trip, not two. A build made again has a new id, and a kept
        handle of a deleted one answers 404, which makes the retriever resolve again."""
        with self._lock:
            held = self._handles.get(build.id)
        if held is None:
            held = self.collection(build)
            if build.id and str(held.id) == build.id:
                with self._lock:
                    self._handles[build.id] = held
        return held

    def _relabel(self, build: Build, metadata: dict[str, Any]) -> None:
        col = self.collection(build)
        self.call(lambda: col.modify(metadata=metadata))

    def _metadata_of(self, build: Build) -> dict[str, Any]:
        return dict(self.collection(build).metadata or build.metadata)

    def drop(self, physical: str) -> None:
        self.call(self.client.delete_collection, physical)
        with self._lock:
            self._handles = {i: c for i, c in self._handles.items() if c.name != physical}

    # ---- records ----------------------------------------------------------------
    def count(self, build: Build) -> int:
        col = self.collection(build)
        return int(self.call(col.count))

    def upsert(
        self,
        build: Build,
        ids: Sequence[str],
        embeddings: Any,
        documents: Sequence[str],
        metadatas: Sequence[dict[str, Any]],
    ) -> None:
        # one call per file cost a round trip and a WAL write each (27 ms): batch to
        # what Chroma allows
        col = self.collection(build)
        step = max(1, min(self.max_batch, 5000))
        for s in range(0, len(ids), step):
            e = s + step
            self.call(
                col.upsert,
                ids=list(ids[s:e]),
                embeddings=embeddings[s:e],
                documents=list(documents[s:e]),
                metadatas=list(metadatas[s:e]),
            )

    def delete_where(self, build: Build, where: Where) -> None:
        col = self.collection(build)
        self.call(col.delete, where=where)

    def get(self, build: Build, ids: Sequence[str]) -> list[Record]:
        col = self._handle(build)
        res = self.call(lambda: col.get(ids=list(ids), include=["documents", "metadatas"]))
        return [
            Record(i, d or "", dict(m or {}))
            for i, d, m in zip(res["ids"], res["documents"], res["metadatas"], strict=True)
        ]

    def iter_records(
        self, build: Build, include: list[str], page: int = 5000
    ) -> Iterator[dict[str, Any]]:
        """Page through a collection: Chroma caps how much one `get` returns."""
        col = self.collection(build)
        offset = 0
        while True:
            res = self.call(col.get, include=include, limit=page, offset=offset)
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

    def search(self, build: Build, vector: list[float], k: int) -> list[Record]:
        col = self._handle(build)
        res = self.call(
            lambda: col.query(
                query_embeddings=[vector],
                n_results=k,
                include=["documents", "metadatas", "distances"],
            )
        )
        return [
            Record(i, d or "", dict(m or {}), 1.0 - float(dist))
            for i, d, m, dist in zip(
                res["ids"][0],
                res["documents"][0],
                res["metadatas"][0],
                res["distances"][0],
                strict=True,
            )
        ]

    @property
    def max_batch(self) -> int:
        try:
            return int(self.call(lambda: self.client.get_max_batch_size()))
        except Exception:
            return 1000


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
            hint="Check the Chroma settings (TUNESTACK_CHROMA_URL and its auth).",
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
