"""Ingest against a real Chroma server: idempotency, changes, prune, bad files, kill -9;
the first two on Milvus (milvus-lite's gRPC server) too."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from services.common.embedders import Embedder
from services.rag_api.ingest import Ingestor
from services.rag_api.store import VectorStore
from tests.conftest import SAMPLES
from tests.integration.conftest import BOTH_STORES, Stack

MB = 2**20


def ingestor(store: VectorStore, embedder: Embedder, max_mb: int = 16) -> Ingestor:
    return Ingestor(store, embedder, chunk_size=128, chunk_overlap=16, max_file_bytes=max_mb * MB)


def records(store: VectorStore, collection: str, embedder: Embedder) -> list[dict]:
    build = store.resolve(collection, embedder.name, embedder.fingerprint, embedder.name)
    return list(store.iter_records(build, include=["metadatas"]))


@BOTH_STORES
def test_sample_corpus_is_idempotent(store: VectorStore, embedder: Embedder) -> None:
    ing = ingestor(store, embedder)
    first = ing.ingest([SAMPLES / "corpus"], "idem")
    assert first.counts.get("failed", 0) == 0, first.to_dict()
    assert first.counts["ok"] >= 13
    suffixes = {Path(f.path).suffix for f in first.files if f.status == "ok"}
    assert {".md", ".txt", ".html", ".pdf", ".docx"} <= suffixes
    n = len(records(store, "idem", embedder))
    assert n == first.chunks_written

    second = ing.ingest([SAMPLES / "corpus"], "idem")
    assert set(second.counts) == {"unchanged"}
    assert second.chunks_written == 0
    assert len(records(store, "idem", embedder)) == n


@BOTH_STORES
def test_changed_file_replaces_and_prune_removes(
    tmp_path: Path, store: VectorStore, embedder: Embedder
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("Alpha policy. " * 50)
    (docs / "b.md").write_text("Beta policy is short.")
    ing = ingestor(store, embedder)
    ing.ingest([docs], "changes")
    old = {
        r["metadatas"]["content_hash"]
        for r in records(store, "changes", embedder)
        if r["metadatas"]["file_name"] == "a.md"
    }

    (docs / "a.md").write_text("Gamma replaces alpha entirely.")
    rep = ing.ingest([docs], "changes")
    assert {Path(f.path).name: f.status for f in rep.files} == {"a.md": "ok", "b.md": "unchanged"}
    recs = [r["metadatas"] for r in records(store, "changes", embedder)]
    a = [m for m in recs if m["file_name"] == "a.md"]
    assert len(a) == 1 and a[0]["content_hash"] not in old

    (docs / "b.md").unlink()
    kept = ing.ingest([docs], "changes")  # without --prune nothing is deleted
    assert kept.counts == {"unchanged": 1}
    assert len(records(store, "changes", embedder)) == 2
    pruned = ing.ingest([docs], "changes", prune=True)
    assert pruned.counts == {"unchanged": 1, "removed": 1}
    assert [m["metadatas"]["file_name"] for m in records(store, "changes", embedder)] == ["a.md"]


def test_bad_files_never_stop_the_others(
    tmp_path: Path, store: VectorStore, embedder: Embedder
) -> None:
    d = tmp_path / "bad"
    d.mkdir()
    good_pdf = next((SAMPLES / "corpus" / "generated").glob("*.pdf"))
    (d / "corrupt.pdf").write_bytes(good_pdf.read_bytes()[:300])
    (d / "empty.txt").write_bytes(b"")
    (d / "binary.txt").write_bytes(os.urandom(4096) + b"\x00" * 16)
    (d / "gbk.txt").write_bytes("深圳分销商的合同于二零二四年签订。".encode("gbk"))
    (d / "utf16.txt").write_bytes("Warranty claims need the order number.".encode("utf-16"))
    with (d / "huge.txt").open("wb") as f:
        f.write(b"All work and no play makes a dull document. " * (20 * MB // 45 + 1))
    (d / "fine.md").write_text("This file is fine and must be ingested.")
    rep = ingestor(store, embedder, max_mb=16).ingest([d], "badfiles")
    status = {Path(f.path).name: (f.status, f.reason) for f in rep.files}
    assert status["fine.md"][0] == "ok"
    assert status["gbk.txt"][0] == "ok"
    assert status["utf16.txt"][0] == "ok"
    assert status["corrupt.pdf"][0] == "failed" and "PDF" in status["corrupt.pdf"][1]
    assert status["empty.txt"] == ("failed", "empty file")
    assert status["binary.txt"][0] == "failed" and "binary" in status["binary.txt"][1]
    assert status["huge.txt"][0] == "failed" and "too large" in status["huge.txt"][1]
    names = Counter(r["metadatas"]["file_name"] for r in records(store, "badfiles", embedder))
    assert set(names) == {"fine.md", "gbk.txt", "utf16.txt"}  # no partial chunks of failures
    gbk = [
        r for r in records(store, "badfiles", embedder) if r["metadatas"]["file_name"] == "gbk.txt"
    ]
    assert gbk


def test_kill_9_mid_ingest_then_rerun_is_complete(
    tmp_path: Path, stack: Stack, store: VectorStore, embedder: Embedder
) -> None:
    docs = tmp_path / "many"
    docs.mkdir()
    for i in range(60):  # 900 chunks: killed after the first of two 512-chunk batches
        (docs / f"doc{i:02d}.md").write_text(
            " ".join(f"Document {i} sentence {j} about topic {i * j % 17}." for j in range(120))
        )
    cmd = [
        sys.executable,
        "-m",
        "platform_cli.main",
        "ingest",
        str(docs),
        "-c",
        "killed",
        "--chunk-size",
        "64",
        "--chunk-overlap",
        "0",
    ]
    proc = subprocess.Popen(
        cmd,
        env=stack.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            builds = [b for b in store.builds("killed")]
            if builds and store.count(builds[0]) > 0:
                break
            assert proc.poll() is None, "ingest finished before it could be killed"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    partial = store.count(store.builds("killed")[0])

    rerun = Ingestor(store, embedder, chunk_size=64, chunk_overlap=0, max_file_bytes=MB)
    rep = rerun.ingest([docs], "killed")
    assert rep.counts.get("unchanged", 0) >= 1  # work done before the kill is kept
    recs = records(store, "killed", embedder)
    ids = [r["id"] for r in recs]
    assert len(ids) == len(set(ids))

    fresh = Ingestor(store, embedder, chunk_size=64, chunk_overlap=0, max_file_bytes=MB)
    clean = fresh.ingest([docs], "killed-clean")
    assert len(recs) == clean.chunks_written > partial
    per_file = Counter(r["metadatas"]["file_name"] for r in recs)
    expected = {r["metadatas"]["file_name"]: r["metadatas"]["n_chunks"] for r in recs}
    assert per_file == Counter(expected)


def test_nothing_to_ingest_is_a_clear_error(
    tmp_path: Path, store: VectorStore, embedder: Embedder
) -> None:
    from services.common.errors import BadInput

    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    with pytest.raises(BadInput, match="No supported documents"):
        ingestor(store, embedder).ingest([tmp_path], "nothing")
    shutil.rmtree(tmp_path / "image.png", ignore_errors=True)
