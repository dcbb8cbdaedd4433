"""Milvus behind the store interface (milvus-lite's gRPC server, real pymilvus client):
the build bookkeeping (reindex, staging, publish, sweep, delete), names Milvus would
refuse, filters that keep quotes as data, and its failures as our errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from services.common.embedders import Embedder, EmbedderPool
from services.common.errors import BadInput, EmbedderMismatch, NotFound, ServiceUnavailable
from services.rag_api.ingest import Ingestor
from services.rag_api.reindex import reindex
from services.rag_api.store import BUILDING, VectorStore
from services.rag_api.store_milvus import MilvusStore, milvus_filter
from tests.conftest import free_port
from tests.integration.conftest import Stack, register_embedder_copy


def docs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        (folder / f"d{i}.md").write_text(f"Document {i} explains warranty rule {i}. " * 30)
    return folder


def test_reindex_stage_publish_sweep_and_delete_on_milvus(
    tmp_path: Path, stack: Stack, milvus_store: VectorStore, embedder: Embedder
) -> None:
    store = milvus_store
    ing = Ingestor(store, embedder, chunk_size=64, chunk_overlap=8, max_file_bytes=2**20)
    rep = ing.ingest([docs(tmp_path / "docs")], "m.reindex")
    n = rep.chunks_written
    assert n > 4 and store.count(store.builds("m.reindex")[0]) == n

    register_embedder_copy(stack, "minilm-milvus-copy")
    copy = EmbedderPool(stack.registry).get("minilm-milvus-copy")
    # a crashed reindex leaves a staging build: never served, swept by the next writer
    staged = store.stage("m.reindex", copy.name, copy.fingerprint, copy.dimension)
    assert staged.metadata["tunestack"] == BUILDING
    assert [b.embedder for b in store.builds("m.reindex")] == ["all-minilm-l6-v2"]
    with pytest.raises(EmbedderMismatch):
        store.resolve("m.reindex", copy.name, copy.fingerprint, embedder.name)
    build, done = reindex(store, "m.reindex", copy, embedder.name)
    assert done == n and store.count(build) == n
    assert staged.physical not in {b.physical for b in store._builds("m.reindex", duplicates=True)}
    assert store.resolve("m.reindex", copy.name, copy.fingerprint, embedder.name).id == build.id
    # reindexing again swaps the whole build: a new one is served, the old one is gone
    again, _ = reindex(store, "m.reindex", copy, embedder.name)
    assert again.physical != build.physical
    assert {b.physical for b in store.builds("m.reindex")} >= {again.physical}
    with pytest.raises(NotFound):
        store.count(build)
    # a name Milvus would refuse ('.', '-') is ours to keep: 'm.reindex' and 'm-reindex'
    # are different collections
    assert not store.builds("m-reindex")
    assert store.delete("m.reindex") == 2 and not store.builds("m.reindex")


def test_filters_keep_quotes_as_data(milvus_store: VectorStore, embedder: Embedder) -> None:
    tricky = '/docs/a "b" \\ c\' or id != "".md'
    assert milvus_filter({"$and": [{"source": tricky}, {"content_hash": {"$ne": "h"}}]}) == (
        f'(source == {json.dumps(tricky)}) and (content_hash != "h")'
    )
    with pytest.raises(BadInput):
        milvus_filter({"source or 1": "x"})
    store = milvus_store
    build = store.create("m-filters", embedder.name, embedder.fingerprint, embedder.dimension)
    vecs = embedder.encode(["one", "two"])
    metas = [{"source": tricky, "content_hash": "old"}, {"source": "/docs/other.md"}]
    store.upsert(build, ["c1", "c2"], vecs, ["one", "two"], metas)
    store.delete_where(build, {"$and": [{"source": tricky}, {"content_hash": {"$ne": "new"}}]})
    assert [r.id for r in store.get(build, ["c1", "c2"])] == ["c2"]
    store.delete("m-filters")


def test_milvus_failures_are_our_errors(milvus_store: VectorStore, embedder: Embedder) -> None:
    store = milvus_store
    build = store.create("m-errors", embedder.name, embedder.fingerprint, embedder.dimension)
    with pytest.raises(BadInput) as bad:  # a vector of the wrong dimension
        store.upsert(build, ["x"], np.zeros((1, embedder.dimension + 1)), ["x"], [{}])
    assert bad.value.status_code == 422
    with pytest.raises(BadInput) as big:  # a chunk over Milvus's VARCHAR limit
        store.upsert(build, ["x"], embedder.encode(["x"]), ["x" * 70_000], [{}])
    assert "chunk size" in (big.value.hint or "")
    store.delete("m-errors")
    with pytest.raises(NotFound) as gone:  # deleted meanwhile: 404, and the retriever retries
        store.search(build, embedder.encode(["x"])[0].tolist(), 3)
    assert gone.value.status_code == 404

    down = MilvusStore(f"http://127.0.0.1:{free_port()}", timeout=3)
    assert down.heartbeat() is False
    with pytest.raises(ServiceUnavailable) as e:
        down.builds()
    assert e.value.service == "milvus" and "TUNESTACK_MILVUS_URI" in (e.value.hint or "")


def test_local_mode_runs_milvus_lite_instead_of_chroma(tmp_path: Path) -> None:
    """TUNESTACK_VECTOR_STORE=milvus: the local stack's store process is `milvus-lite
    server` on loopback with its data in TUNESTACK_HOME; status lists it where Chroma
    was, the processes it starts are told the URI, and `down` stops it."""
    from platform_cli.settings import StackSettings
    from platform_cli.stack.local import MILVUS, LocalStack

    port = free_port()
    local = LocalStack(StackSettings(home=tmp_path, vector_store="milvus", milvus_port=port))
    spec = local.spec(MILVUS)
    assert spec.argv[1:] == [
        "server",
        "--data-dir",
        str(tmp_path / "milvus"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    env = local.child_env()
    assert env["TUNESTACK_VECTOR_STORE"] == "milvus"
    assert env["TUNESTACK_MILVUS_URI"] == f"http://127.0.0.1:{port}"
    try:
        local.start(spec)
        local.wait_healthy(spec, 60)
        rows = {r.name: r for r in local.status()}
        assert "chroma" not in rows and rows[MILVUS].healthy
        assert MilvusStore(env["TUNESTACK_MILVUS_URI"]).heartbeat()
    finally:
        assert MILVUS in local.down()
    assert local.pid(MILVUS) is None
