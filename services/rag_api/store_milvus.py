"""Milvus as the vector store, for stacks that outgrow one Chroma node.

pymilvus speaks Milvus's gRPC protocol to whatever `TUNESTACK_MILVUS_URI` names: a Milvus
cluster (its official Helm chart), Milvus standalone, Zilliz Cloud, or, on one machine
and in the tests, `milvus-lite server` (the Milvus project's embedded engine behind the
same protocol; local mode starts it like `chroma run`). The code path is the same for all.

Each build is a Milvus collection: `id` (primary key), `vector` (COSINE, AUTOINDEX: HNSW on
a cluster, exact on milvus-lite), `document`, and the chunk metadata as dynamic fields.
Build metadata (the bookkeeping in store.py) is one JSON collection property, so a publish
is one `alter_collection_properties`. Collections are created with Strong consistency: a
chunk written by ingest is found by the next query, as with Chroma. BM25 stays ours (the
tokens stored at ingest) so both engines rank identically.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

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
META = "tunestack.meta"  # collection property: the build's metadata as JSON
UID = "tunestack.id"  # ... an id of our own: Milvus ids are not unique across restarts
PREFIX = "ts_"  # our collections; others in the same Milvus database are left alone
MAX_DOC = 65535  # Milvus's VARCHAR limit (bytes)
BATCH = 1000  # rows per upsert: far below the gRPC message limit at 1,024 dimensions
_HINT = "Check the Milvus server's log and send the request again."


class MilvusStore(VectorStore):
    engine = "milvus"

    def __init__(self, uri: str, token: str | None = None, timeout: float = 30.0) -> None:
        self.url = uri.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._client: Any = None
        self._lock = threading.Lock()
        # pymilvus logs every failed RPC with a traceback at ERROR; `call` reports them
        logging.getLogger("pymilvus").setLevel(logging.CRITICAL)

    # ---- connection -------------------------------------------------------------
    def _down(self, e: BaseException) -> ServiceUnavailable:
        return ServiceUnavailable(
            "milvus",
            f"Milvus is not reachable at {self.url} ({type(e).__name__}).",
            hint="Start the stack with `tunestack up` (or check TUNESTACK_MILVUS_URI).",
        )

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                from pymilvus import MilvusClient

                try:
                    self._client = MilvusClient(
                        uri=self.url, token=self._token or "", timeout=self._timeout
                    )
                except Exception as e:
                    raise self._down(e) from e
            return self._client

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a Milvus call: a server that does not answer becomes a 503 naming Milvus,
        Milvus's own refusals our types (see `milvus_error`)."""
        try:
            try:
                return fn(*args, **kwargs)
            except Exception as e:
                if not _is_connection_error(e):
                    raise
                # once more: gRPC drops an idle channel (a server's GOAWAY for too many
                # keepalive pings) and the call in flight fails; the channel reconnects
                time.sleep(0.2)
                return fn(*args, **kwargs)
        except TunestackError:
            raise
        except Exception as e:
            if _is_connection_error(e):
                with self._lock:
                    self._client = None
                raise self._down(e) from e
            mapped = milvus_error(e)
            if mapped is not None:
                raise mapped from e
            raise

    def heartbeat(self) -> bool:
        try:
            self.call(lambda: self.client.list_collections())
            return True
        except (ServiceUnavailable, NotFound):
            return False

    def physical_name(self, name: str, embedder_fp: str, staged: str = "") -> str:
        """Milvus names allow letters, digits and '_' only: the readable part with the
        others replaced, and a hash of the exact name so that 'a.b' and 'a-b' differ."""
        exact = super().physical_name(name, embedder_fp, staged)
        digest = hashlib.sha1(exact.encode()).hexdigest()[:8]
        return f"{PREFIX}{_readable(exact)}_{digest}"

    # ---- physical collections ---------------------------------------------------
    def _list(self, name: str | None = None) -> list[Physical]:
        """Our collections (those of `name` only: one describe call each, per query)."""
        out = []
        prefix = PREFIX + (_readable(name) + "__" if name else "")
        for physical in self.call(lambda: self.client.list_collections()):
            if not physical.startswith(prefix):
                continue
            try:
                desc = self.call(self.client.describe_collection, physical)
            except NotFound:  # dropped since it was listed
                continue
            props = desc.get("properties") or {}
            try:
                md = json.loads(props.get(META) or "{}")
            except ValueError:
                md = {}
            out.append(Physical(physical, str(props.get(UID, "")), md))
        return out

    def _make(self, physical: str, metadata: dict[str, Any]) -> Physical:
        from pymilvus import DataType, MilvusClient

        client = self.client
        if not self.call(client.has_collection, physical):
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
            schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=512)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=int(metadata["dimension"]))
            schema.add_field("document", DataType.VARCHAR, max_length=MAX_DOC)
            index = client.prepare_index_params()
            index.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="COSINE")
            props = {META: json.dumps(metadata), UID: uuid.uuid4().hex}
            with contextlib.suppress(Conflict):  # another writer made it meanwhile: use theirs
                self.call(
                    client.create_collection,
                    physical,
                    schema=schema,
                    index_params=index,
                    consistency_level="Strong",
                    properties=props,
                )
        found = next((c for c in self._list(metadata["name"]) if c.name == physical), None)
        if found is None:
            raise NotFound(f"Milvus lost collection {physical} as it was made.", hint=_HINT)
        return found

    def _relabel(self, build: Build, metadata: dict[str, Any]) -> None:
        self.call(
            self.client.alter_collection_properties,
            build.physical,
            properties={META: json.dumps(metadata)},
        )

    def _metadata_of(self, build: Build) -> dict[str, Any]:
        desc = self.call(self.client.describe_collection, build.physical)
        raw = (desc.get("properties") or {}).get(META)
        return dict(json.loads(raw)) if raw else dict(build.metadata)

    def drop(self, physical: str) -> None:
        self.call(self.client.drop_collection, physical)

    # ---- records ----------------------------------------------------------------
    def count(self, build: Build) -> int:
        res = self.call(self.client.query, build.physical, filter="", output_fields=["count(*)"])
        return int(res[0]["count(*)"]) if res else 0

    def upsert(
        self,
        build: Build,
        ids: Sequence[str],
        embeddings: Any,
        documents: Sequence[str],
        metadatas: Sequence[dict[str, Any]],
    ) -> None:
        rows = []
        for id_, vec, doc, md in zip(ids, embeddings, documents, metadatas, strict=True):
            if len(doc.encode()) > MAX_DOC:
                raise BadInput(
                    f"A chunk of {len(doc.encode())} bytes exceeds Milvus's limit ({MAX_DOC}).",
                    hint="Ingest with a smaller chunk size (TUNESTACK_CHUNK_SIZE).",
                )
            vector = vec.tolist() if hasattr(vec, "tolist") else list(vec)
            clean = {k: v for k, v in md.items() if v is not None}
            rows.append({**clean, "id": id_, "vector": vector, "document": doc})
        for s in range(0, len(rows), BATCH):
            self.call(self.client.upsert, build.physical, rows[s : s + BATCH])

    def delete_where(self, build: Build, where: Where) -> None:
        self.call(self.client.delete, build.physical, filter=milvus_filter(where))

    def get(self, build: Build, ids: Sequence[str]) -> list[Record]:
        rows = self.call(
            self.client.get, build.physical, ids=list(ids), output_fields=["document", "$meta"]
        )
        return [_record(r) for r in rows]

    def iter_records(
        self, build: Build, include: list[str], page: int = 1000
    ) -> Iterator[dict[str, Any]]:
        """Every record, through Milvus's query iterator (a plain query stops at 16,384)."""
        fields = (["document"] if "documents" in include else []) + (
            ["$meta"] if "metadatas" in include else []
        )
        it = self.call(
            self.client.query_iterator,
            build.physical,
            batch_size=page,
            filter="",
            output_fields=fields or ["id"],
        )
        try:
            while batch := self.call(it.next):
                for row in batch:
                    r = _record(row)
                    rec: dict[str, Any] = {"id": r.id}
                    if "documents" in include:
                        rec["documents"] = r.document
                    if "metadatas" in include:
                        rec["metadatas"] = r.metadata
                    yield rec
        finally:
            it.close()

    def search(self, build: Build, vector: list[float], k: int) -> list[Record]:
        res = self.call(
            self.client.search,
            build.physical,
            data=[vector],
            limit=k,
            output_fields=["document", "$meta"],
            search_params={"metric_type": "COSINE"},
        )
        return [
            _record({"id": h["id"], **(h.get("entity") or {})}, float(h["distance"]))
            for h in res[0]
        ]


def _readable(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _record(row: dict[str, Any], score: float = 0.0) -> Record:
    md = {k: v for k, v in row.items() if k not in ("id", "document", "vector", "$meta")}
    md |= row.get("$meta") or {}
    return Record(str(row["id"]), str(row.get("document") or ""), md, score)


def milvus_filter(where: Where) -> str:
    """Our filter (Chroma's syntax: {"k": v}, {"k": {"$ne": v}}, {"$and": [...]}) as a
    Milvus boolean expression; values are JSON literals, so quotes in paths stay data."""
    parts = []
    for key, value in where.items():
        if key == "$and":
            parts += [f"({milvus_filter(w)})" for w in value]
            continue
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise BadInput(f"'{key}' cannot be filtered on.")
        op, operand = ("!=", value["$ne"]) if isinstance(value, dict) else ("==", value)
        parts.append(f"{key} {op} {json.dumps(operand)}")
    return " and ".join(parts)


def milvus_error(e: BaseException) -> TunestackError | None:
    """One of our errors for a refusal Milvus answered with (None: not Milvus's): a
    collection gone meanwhile is 404, a name clash 409, rate limiting 429, a request it
    refuses (a wrong dimension, a bad filter) 422, anything else 503 naming Milvus."""
    if not type(e).__module__.startswith("pymilvus"):
        return None
    code = getattr(e, "code", None)
    message = str(getattr(e, "message", "") or e).strip()
    low = message.lower()
    if code == 100 or "not exist" in low or "not found" in low:
        return NotFound(
            f"Milvus no longer has it: {message}",
            hint="It was deleted or rebuilt meanwhile; `tunestack collections list` shows "
            "what exists. Send the request again.",
        )
    if "already exist" in low:
        return Conflict(f"Milvus refused a duplicate: {message}", hint=_HINT)
    if code == 8 or "rate limit" in low:
        return Busy(f"Milvus is rate-limiting requests: {message}", hint="Retry shortly.")
    if "auth" in low or "permission" in low or "credential" in low:
        return ServiceUnavailable(
            "milvus",
            f"Milvus refused this service's credentials: {message}",
            hint="Check TUNESTACK_MILVUS_TOKEN.",
        )
    if code in (5, 6, 1100) or "invalid" in low or "expected" in low or "illegal" in low:
        return BadInput(f"Milvus refused the request: {message}", hint=_HINT)
    return ServiceUnavailable("milvus", f"Milvus failed: {message}", hint=_HINT)


def _is_connection_error(e: BaseException) -> bool:
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if getattr(cur, "code", None) == 2 or isinstance(cur, ConnectionError):
            return True
        text = str(cur)
        if any(s in text for s in ("Fail connecting", "UNAVAILABLE", "Connection refused")):
            return True
        cur = cur.__cause__ or cur.__context__
    return False
