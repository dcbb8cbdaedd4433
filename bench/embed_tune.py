"""Embedder training throughput: `tunestack embed tune` vs a plain sentence-transformers fit.

Same pairs (XQuAD-en inverse-cloze pseudo-queries, --pairs N of them), same base model,
loss (MultipleNegativesRankingLoss), batch size, learning rate and 1 epoch. Each method in
a fresh process so peak RSS is its own. Target: ours >= 0.95x the plain fit's pairs/s.

    .venv/bin/python bench/embed_tune.py [--pairs 640] [--runs 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from _harness import median, peak_rss_mb, run_isolated, xquad_paragraphs

BATCH, LR = 32, 5e-5


def pairs(n: int) -> list[tuple[str, str]]:
    from services.embed_tuner.pseudo_queries import sentences

    out = [(s, p) for p in xquad_paragraphs("en") for s in sentences(p) if len(s.split()) >= 4]
    return out[:n]


def method_ours(n: int) -> dict:
    from services.common.registry import Registry
    from services.embed_tuner.tune import TrainData, TuneParams, tune

    ps = pairs(n)
    data = TrainData(
        "pair", {"anchor": [a for a, _ in ps], "positive": [p for _, p in ps]}, [], "bench"
    )
    reg = Registry(Path(tempfile.mkdtemp()))
    t = time.perf_counter()
    params = TuneParams(base="all-minilm-l6-v2", name="bench", epochs=1, batch_size=BATCH, lr=LR)
    tune(reg, params, data)
    return {"seconds": time.perf_counter() - t, "pairs": len(ps)}


def method_plain(n: int) -> dict:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers import SentenceTransformerTrainingArguments as Args
    from sentence_transformers.sentence_transformer import losses

    from services.common.registry import Registry

    ps = pairs(n)
    path = Registry(Path(tempfile.mkdtemp())).ensure("embedder", "all-minilm-l6-v2").model_path
    model = SentenceTransformer(str(path), device="cpu")
    ds = Dataset.from_dict({"anchor": [a for a, _ in ps], "positive": [p for _, p in ps]})
    args = Args(
        output_dir=tempfile.mkdtemp(),
        num_train_epochs=1,
        per_device_train_batch_size=BATCH,
        learning_rate=LR,
        warmup_steps=0.1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    t = time.perf_counter()
    SentenceTransformerTrainer(
        model=model, args=args, train_dataset=ds, loss=losses.MultipleNegativesRankingLoss(model)
    ).train()
    model.save(tempfile.mkdtemp())
    return {"seconds": time.perf_counter() - t, "pairs": len(ps)}


METHODS = {"ours": method_ours, "plain": method_plain}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=640)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--method")
    a = ap.parse_args()
    if a.method:
        res = METHODS[a.method](a.pairs)
        res["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(res))
        return
    results: dict[str, list[dict]] = {m: [] for m in METHODS}
    for r in range(a.runs):
        for m in METHODS:
            res = run_isolated(Path(__file__), ["--method", m, "--pairs", str(a.pairs)])
            results[m].append(res)
            print(
                f"run {r + 1} {m}: {res['seconds']:.1f}s rss {res['peak_rss_mb']:.0f} MB",
                file=sys.stderr,
            )
    rate = {m: median([x["pairs"] / x["seconds"] for x in v]) for m, v in results.items()}
    rss = {m: median([x["peak_rss_mb"] for x in v]) for m, v in results.items()}
    print(f"\nEmbedder training, {a.pairs} pairs, batch {BATCH}, 1 epoch, median of {a.runs}:")
    for m in METHODS:
        print(f"{m:6s} {rate[m]:7.2f} pairs/s  peak RSS {rss[m]:.0f} MB")
    print(
        f"ours / plain sentence-transformers: {rate['ours'] / rate['plain']:.2f}x (target >= 0.95x)"
    )


if __name__ == "__main__":
    main()
