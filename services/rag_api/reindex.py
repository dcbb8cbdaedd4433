"""Rebuild a collection for another embedder from the chunks already stored.

Files are not re-read: the chunk texts and their metadata are copied from an existing
build and only the vectors are recomputed, so a user can switch embedders even after the
source documents have moved.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from services.common.embedders import Embedder
from services.rag_api.store import Build, VectorStore


def reindex(
    store: VectorStore,
    collection: str,
    embedder: Embedder,
    default_embedder: str,
    *,
    batch: int = 512,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Build, int]:
    source = store.resolve(collection, None, None, default_embedder)
    if source.embedder_fp == embedder.fingerprint:
        return source, store.count(source)
    target = store.create(
        collection,
        embedder.name,
        embedder.fingerprint,
        embedder.dimension,
        extra={k: v for k, v in source.metadata.items() if k in ("chunk_size", "chunk_overlap")}
        | {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "reindexed_from": source.embedder},
    )
    total = store.count(source)
    col = store.collection(target)
    done = 0
    ids: list[str] = []
    docs: list[str] = []
    metas: list[dict] = []

    def flush() -> None:
        nonlocal done
        vecs = embedder.encode(docs)
        store.call(lambda: col.upsert(ids=ids, embeddings=vecs, documents=docs, metadatas=metas))
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
    store.touch(target)
    return target, done
