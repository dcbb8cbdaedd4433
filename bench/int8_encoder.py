"""A faster CPU encoder: MiniLM as sentence-transformers (fp32, and bf16 autocast where the
CPU has native bf16, which is what `embed_precision=auto` picks) vs the same model as
ONNX with int8 weights (`tunestack embed quantize`), side by side in one process on
XQuAD-en: encode time for the 240 paragraphs + 1,190 questions (median of --runs),
MRR@10, and peak RSS. Prints the CPU flags the figures depend on.

    .venv/bin/python bench/int8_encoder.py [--runs 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _harness import SHARED, cpu_flags, median, peak_rss_mb


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()

    from services.common.embedders import EmbedderPool
    from services.common.ir_eval import evaluate
    from services.common.qa import load_qa
    from services.common.registry import Registry
    from services.embed_tuner.quantize import quantize_embedder

    ds = load_qa(SHARED / "xquad" / "xquad.en.json")
    reg = Registry(Path(tempfile.mkdtemp(prefix="bench-int8-")))
    reg.ensure("embedder", "all-minilm-l6-v2")
    t0 = time.perf_counter()
    quantize_embedder(reg, "all-minilm-l6-v2")
    print(f"quantize: {time.perf_counter() - t0:.1f} s; CPU flags: {cpu_flags()}")
    rows = []
    for label, precision, name in (
        ("sentence-transformers fp32", "fp32", "all-minilm-l6-v2"),
        ("sentence-transformers auto", "auto", "all-minilm-l6-v2"),
        ("onnx int8 (embed quantize)", "fp32", "all-minilm-l6-v2-int8"),
    ):
        emb = EmbedderPool(reg, precision=precision).get(name)
        runs = [evaluate(ds, emb) for _ in range(a.runs)]
        rows.append((f"{label} [{getattr(emb, 'precision', 'int8')}]", runs))
    base = median([r["encode_seconds"] for r in rows[0][1]])
    print(f"{'encoder':44} {'MRR@10':>7} {'encode s':>9} {'speed-up':>9}")
    for label, runs in rows:
        enc = median([r["encode_seconds"] for r in runs])
        print(f"{label:44} {runs[0]['mrr@10']:7.4f} {enc:9.2f} {base / enc:8.2f}x")
    print(f"peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
