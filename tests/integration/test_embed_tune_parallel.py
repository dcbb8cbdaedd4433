"""Data-parallel `embed tune` on CPU: 2 torchrun processes (gloo) against 1 process.

MNRL's negatives are the other passages of the batch, so 2 processes with batch b match
1 process with batch 2b only if each rank scores its queries against both ranks'
passages (sentence-transformers' gather_across_devices) and gradients flow back across
ranks. Here that is checked on real data (dropout off, see below): the same per-step
losses and the same tuned model, one registry entry. 64 XQuAD-en questions with distinct
passages, so the no-duplicates batch sampler cuts the same global batches for both runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from services.common.registry import Registry
from tests.conftest import shared_data

PAIRS = 64


def pairs_file(dest: Path) -> Path:
    data = json.loads(shared_data("xquad", "xquad.en.json").read_text(encoding="utf-8"))
    queries, corpus, relevant = {}, {}, {}
    paragraphs = [p for a in data["data"] for p in a["paragraphs"]]
    for i, p in enumerate(paragraphs[:PAIRS]):
        queries[f"q{i}"] = p["qas"][0]["question"]
        corpus[f"d{i}"] = p["context"]
        relevant[f"q{i}"] = [f"d{i}"]
    dest.write_text(json.dumps({"queries": queries, "corpus": corpus, "relevant_docs": relevant}))
    return dest


def tune(home: Path, pairs: Path, name: str, batch: int, procs: int):
    env = {
        **os.environ,
        "TUNESTACK_HOME": str(home),
        "TUNESTACK_MODE": "local",
        "HF_HUB_OFFLINE": "1",
        "COLUMNS": "400",
    }
    if procs > 1:
        env["NPROC_PER_NODE"] = str(procs)
    cmd = [sys.executable, "-m", "platform_cli.main", "embed", "tune", "--pairs", str(pairs)]
    cmd += ["--name", name, "--epochs", "1", "--batch-size", str(batch)]
    cmd += ["--max-seq-length", "96", "--json"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("embed-parallel")
    pairs = pairs_file(home / "pairs.json")
    # Dropout draws its masks from each process's own random stream, so with it on the
    # two runs differ by noise alone; it is switched off in this home's copy of the base
    # so that what is compared is the data-parallel arithmetic.
    base = Path(Registry(home).ensure("embedder", "all-minilm-l6-v2").record.model_path)
    cfg = json.loads((base / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (base / "config.json").write_text(json.dumps(cfg))
    one = tune(home, pairs, "one", batch=16, procs=1)
    assert one.returncode == 0, one.stderr[-3000:]
    two = tune(home, pairs, "two", batch=8, procs=2)
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-3000:]
    return home


def logged_losses(entry: Path) -> list[tuple[int, float]]:
    rows = [json.loads(x) for x in (entry / "trainer_log.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def test_two_processes_tune_what_one_process_with_twice_the_batch_tunes(runs: Path) -> None:
    from sentence_transformers import SentenceTransformer

    one, two = runs / "models" / "embedders" / "one", runs / "models" / "embedders" / "two"
    a, b = logged_losses(one), logged_losses(two)
    assert [s for s, _ in a] == [s for s, _ in b] and len(a) >= 2
    assert [x for _, x in b] == pytest.approx([x for _, x in a], rel=2e-3), (a, b)
    meta = json.loads((two / "meta.json").read_text())
    assert meta["metrics"]["trained_steps"] == [1, PAIRS // 16]
    texts = ["Where did the Panthers play?", "Warsaw is the capital of Poland."]
    va = SentenceTransformer(str(one / "model"), device="cpu").encode(texts)
    vb = SentenceTransformer(str(two / "model"), device="cpu").encode(texts)
    same = float(np.abs(va - vb).max())
    base = Registry(runs).embedder(meta["base_model"]).record.model_path
    v0 = SentenceTransformer(str(base), device="cpu").encode(texts)
    moved = float(np.abs(va - v0).max())
    # the two runs agree 20x more closely than tuning moved the model away from the base
    assert same < moved / 20, (same, moved)
    # one entry, no work folder or partial files left by either rank
    left = sorted(p.name for p in (runs / "models" / "embedders").iterdir() if p.name[0] == ".")
    assert not [n for n in left if n.startswith(".work-")], left
