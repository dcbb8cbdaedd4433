"""Rebuild a collection for another embedder from the chunks already stored.

Files are not re-read: the chunk texts and their metadata are copied from an existing
build and only the vectors are recomputed, so a user can switch embedders even after the
source documents have moved.

The new build is written to a staging collection that nobody reads (store.stage) and
published only once complete (store.publish), replacing the embedder's previous build if
there was one. So the build served is never half-built, a reindex killed midway leaves
the previous build (or none) in place rather than a partial default, and chunks the
source no longer has do not survive in the target. Callers hold the collection's lock;
staging builds left by a killed reindex are deleted first (store.sweep).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from services.common.embedders import Embedder
from services.common.errors import Conflict
from services.rag_api.store import Build, VectorStore

COPIED = ("chunk_size", "chunk_overlap")


def source_build(store: VectorStore, collection: str, default_embedder: str) -> Build:
    """The build to copy chunks from: an up-to-date one (not marked stale by an ingest
    into another build), the default embedder's if it is one of those."""
    builds = store.builds(collection)
    fresh = [b for b in builds if not b.stale]
    if not fresh:
        return store.resolve(collection, None, None, default_embedder)
    for b in fresh:
        if b.embedder == default_embedder:
            return b
    return max(fresh, key=lambda b: str(b.metadata.get("created", "")))


def reindex(
    store: VectorStore,
    collection: str,
    embedder: Embedder,
    default_embedder: str,
    *,
    batch: int = 512,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Build, int]:
    store.sweep(collection)
    source = source_build(store, collection, default_embedder)
    if source.embedder_fp == embedder.fingerprint:
        return source, store.count(source)
    extra = {k: v for k, v in source.metadata.items() if k in COPIED}
    extra |= {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "reindexed_from": source.embedder}
    if source.stale:  # every build lags behind another: the copy lags just as its source
        extra["stale"] = source.stale
    total = store.count(source)
    target = store.stage(collection, embedder.name, embedder.fingerprint, embedder.dimension, extra)
    try:
        done = _copy(store, source, target, embedder, batch, total, progress)
        return store.publish(target), done
    except BaseException:
        with contextlib.suppress(Exception):  # store down: the next writer's sweep does it
            store.drop(target.physical)
        raise


def _copy(
    store: VectorStore,
    source: Build,
    target: Build,
    embedder: Embedder,
    batch: int,
    total: int,
    progress: Callable[[int, int], None] | None,
) -> int:
    done = 0
    ids: list[str] = []
    docs: list[str] = []
    metas: list[dict] = []

    def flush() -> None:
        nonlocal done
        vecs = embedder.encode(docs)
        store.upsert(target, ids, vecs, docs, metas)
        done += len(ids)
        if progress:
            progress(done, total)
        ids.clear()
        docs.clear()
        metas.clear()

    for rec in store.iter_records(source, include=["documents", "metadatas"]):
        md = dict(rec["metadatas"] or {})
        md.update(embedder=embedder.name, embedder_fp=embedder.fingerprint)
        ids.append(rec["id"])
        docs.append(rec["documents"] or "")
        metas.append(md)
        if len(ids) >= batch:
            flush()
    if ids:
        flush()
    if store.count(target) != done:
        raise Conflict(
            f"The source build of '{source.name}' changed while it was copied.",
            hint=f"Run `tunestack reindex {source.name} --embedder {embedder.name}` again.",
        )
    return done
