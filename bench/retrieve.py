"""Latency of POST /v1/retrieve (uvicorn) at 10k and 100k chunks, on each vector store:
Chroma's server and Milvus (milvus-lite's gRPC server), side by side in one run.

Real query embeddings (XQuAD-en questions through the API's embedder); the stored
chunks are XQuAD-en paragraph chunks embedded with the same model and replicated with
small vector noise up to the target size (embedding 100k real chunks would take ~15 min
on 2 cores and measure the embedder, not retrieval). Prints p50/p95 per mode and the API
process's peak RSS. Target: dense p95 <= 50 ms at 100k.

    .venv/bin/python bench/retrieve.py [--sizes 10000,100000] [--queries 200]
        [--stores chroma,milvus]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
from _harness import (
    base_embedder,
    chroma_server,
    free_port,
    milvus_server,
    percentile,
    wait_http,
    xquad_paragraphs,
    xquad_questions,
)

if TYPE_CHECKING:
    from services.rag_api.store import VectorStore


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def fill(store: VectorStore, home: Path, target: int, have: int) -> int:
    from services.common.documents.chunking import Chunker
    from services.rag_api.bm25 import tokenize

    emb = base_embedder(home)
    chunker = Chunker(128, 16, emb.tokens)
    texts = [c for p in xquad_paragraphs("en") for c in chunker.split(p)]
    vecs = emb.encode(texts)
    toks = [" ".join(tokenize(t)) for t in texts]
    build = store.create("bench", emb.name, emb.fingerprint, emb.dimension)
    rng = np.random.default_rng(0)
    step = 5000
    for start in range(have, target, step):
        idx = np.arange(start, min(target, start + step))
        base = idx % len(texts)
        v = vecs[base] + rng.normal(0, 0.02, (len(idx), vecs.shape[1])).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        store.upsert(
            build,
            ids=[f"c{i:07d}" for i in idx],
            embeddings=v,
            documents=[texts[b] for b in base],
            metadatas=[
                {
                    "source": f"/synthetic/doc{i // 8}.txt",
                    "file_name": f"doc{i // 8}.txt",
                    "chunk_index": int(i % 8),
                    "n_chunks": 8,
                    "content_hash": "x",
                    "embedder": emb.name,
                    "embedder_fp": emb.fingerprint,
                    "bm25": toks[b],
                }
                for i, b in zip(idx, base, strict=True)
            ],
        )
        print(f"  stored {min(target, start + step)}/{target}", file=sys.stderr, end="\r")
    store.touch(build)
    return target


def measure(
    engine: str, url: str, sizes: list[int], questions: list[str]
) -> list[tuple[str, int, str, float, float, float, float]]:
    """Fill a store of `engine` at `url` up to each size and time the API on it."""
    from services.common.settings import CommonSettings
    from services.rag_api.store_engines import open_store

    rows = []
    with tempfile.TemporaryDirectory() as home:
        port = free_port()
        env = {
            **os.environ,
            "TUNESTACK_HOME": home,
            "TUNESTACK_VECTOR_STORE": engine,
            "TUNESTACK_CHROMA_URL" if engine == "chroma" else "TUNESTACK_MILVUS_URI": url,
            "TUNESTACK_RAG_PORT": str(port),
        }
        store = open_store(
            CommonSettings.model_validate(
                {"vector_store": engine, "chroma_url": url, "milvus_uri": url}
            )
        )
        api = subprocess.Popen(
            [sys.executable, "-m", "services.rag_api"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        api_url = f"http://127.0.0.1:{port}"
        try:
            wait_http(api_url + "/healthz")
            have = 0
            for n in sizes:
                t = time.perf_counter()
                have = fill(store, Path(home), n, have)
                print(
                    f"{engine}: filled {n} chunks in {time.perf_counter() - t:.0f}s",
                    file=sys.stderr,
                )
                with httpx.Client(base_url=api_url, timeout=300) as c:
                    for mode in ("dense", "bm25", "hybrid"):
                        body = {"collection": "bench", "mode": mode, "top_k": 5}
                        t = time.perf_counter()
                        c.post("/v1/retrieve", json={**body, "query": "warm up"}).raise_for_status()
                        first = (time.perf_counter() - t) * 1000
                        for q in questions[:10]:
                            c.post("/v1/retrieve", json={**body, "query": q})
                        lat = []
                        for q in questions:
                            t = time.perf_counter()
                            c.post("/v1/retrieve", json={**body, "query": q}).raise_for_status()
                            lat.append((time.perf_counter() - t) * 1000)
                        p50, p95 = percentile(lat, 50), percentile(lat, 95)
                        row = (engine, n, mode, p50, p95, first, vm_hwm_mb(api.pid))
                        print("  " + " ".join(map(str, row)), file=sys.stderr, flush=True)
                        rows.append(row)
        finally:
            api.terminate()
            api.wait(10)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--stores", default="chroma,milvus")
    a = ap.parse_args()
    sizes = [int(x) for x in a.sizes.split(",")]
    questions = xquad_questions("en")[: a.queries]
    servers = {"chroma": chroma_server, "milvus": milvus_server}
    rows = []
    for engine in a.stores.split(","):
        with servers[engine]() as url:
            rows += measure(engine, url, sizes, questions)
    print(f"\n/v1/retrieve latency, {len(questions)} sequential queries, top_k=5 (ms)")
    head = ("store", "chunks", "mode", "p50", "p95", "first", "API RSS MB")
    print("{:7s} {:>8s} {:7s} {:>7s} {:>7s} {:>8s} {:>11s}".format(*head))
    for engine, n, mode, p50, p95, first, rss in rows:
        print(f"{engine:7s} {n:8d} {mode:7s} {p50:7.1f} {p95:7.1f} {first:8.0f} {rss:11.0f}")
    top = max(sizes)
    dense = {r[0]: r[4] for r in rows if r[2] == "dense" and r[1] == top}
    for engine, p95 in dense.items():
        print(f"{engine}: dense p95 at {top}: {p95:.1f} ms (target <= 50 ms)")
    if len(dense) == 2:
        print(f"milvus/chroma dense p95 at {top}: {dense['milvus'] / dense['chroma']:.2f}x")


if __name__ == "__main__":
    main()
