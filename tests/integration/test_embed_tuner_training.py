"""The embedding tuner's claims, checked in this process (no stack needed):

- tuning on paragraphs alone improves retrieval for human questions it never saw;
- a run killed with SIGKILL resumes (not restarts) and ends with the weights of an
  uninterrupted run;
- `--loss cached-mnrl|triplet|cosent`, `--hard-negatives` and `--matryoshka` change what
  the trainer actually runs.

Training goes through the service layer or the CLI app in this process (typer's
CliRunner), so torch and the base model load once; only the run killed with SIGKILL is a
subprocess.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from platform_cli.main import app
from services.common.embedders import EmbedderPool
from services.common.ir_eval import error_reduction, evaluate
from services.common.qa import squad_to_qa
from services.common.records import EmbedderRecord
from services.common.registry import Entry, Registry
from services.embed_tuner import service as svc
from services.embed_tuner.corpus import load_corpus_file
from services.embed_tuner.pseudo_queries import pseudo_queries
from services.embed_tuner.records import load_records
from services.embed_tuner.settings import EmbedSettings
from services.embed_tuner.trainer_run import latest_checkpoint, training_table
from services.embed_tuner.tune import TrainData, TuneParams, work_dir
from tests.conftest import SAMPLES, shared_data

BASE = "all-minilm-l6-v2"
# A few steps on tiny inputs: these tests check what is trained, not how well.
TINY = ["--epochs", "1", "--batch-size", "8", "--max-seq-length", "32"]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> EmbedSettings:
    s = EmbedSettings(home=tmp_path_factory.mktemp("embed-tuner-home"))
    Registry(s.home_dir).ensure("embedder", BASE)
    return s


def tune_cli(s: EmbedSettings, *args: str) -> str:
    """`tunestack embed tune ARGS` in this process; returns what it printed."""
    r = CliRunner().invoke(
        app, ["embed", "tune", *args], env={"TUNESTACK_HOME": str(s.home_dir), "COLUMNS": "200"}
    )
    assert r.exit_code == 0, (r.output, r.exception)
    return r.output


def record(s: EmbedSettings, name: str) -> EmbedderRecord:
    return Registry(s.home_dir).embedder(name).record


def faq_pairs() -> list[tuple[str, str]]:
    """The 15 (question, answer) pairs of the sample product FAQ."""
    text = (SAMPLES / "corpus" / "product_faq.md").read_text(encoding="utf-8")
    return re.findall(r"^\*\*(.+\?)\*\*\n(.+)$", text, flags=re.MULTILINE)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def records(tmp_path: Path, kind: str) -> Path:
    pairs = faq_pairs()
    assert len(pairs) >= 15
    other = [pairs[(i + 1) % len(pairs)][1] for i in range(len(pairs))]
    if kind == "pair":
        rows = [{"text": q, "text_pos": a} for q, a in pairs]
    elif kind == "triplet":
        rows = [
            {"text": q, "text_pos": a, "text_neg": n}
            for (q, a), n in zip(pairs, other, strict=True)
        ]
    else:
        rows = [
            {"sentence1": q, "sentence2": a if i % 2 else n, "label": 1.0 if i % 2 else 0.0}
            for i, ((q, a), n) in enumerate(zip(pairs, other, strict=True))
        ]
    return write_jsonl(tmp_path / f"{kind}.jsonl", rows)


# ---- 1. tuning improves retrieval --------------------------------------------------------

XQUAD_ARTICLES = 12  # of 48: 60 paragraphs, 322 human questions


def test_tuned_on_paragraphs_beats_base_on_their_unseen_human_questions(
    settings: EmbedSettings, tmp_path: Path
) -> None:
    """The README's XQuAD-en claim at CI size: tuned from 60 paragraphs alone, scored on
    their 322 human questions it never saw (figures and margins: MIN_GAIN below)."""
    squad = json.loads(shared_data("xquad", "xquad.en.json").read_text(encoding="utf-8"))
    subset = {"data": squad["data"][:XQUAD_ARTICLES]}
    paragraphs = tmp_path / "paragraphs.json"  # the questions are not even written out
    paragraphs.write_text(
        json.dumps(
            {
                "data": [
                    {"paragraphs": [{"context": p["context"]} for p in a["paragraphs"]]}
                    for a in subset["data"]
                ]
            }
        ),
        encoding="utf-8",
    )
    held_out = squad_to_qa(subset)
    corpus = load_corpus_file(paragraphs)
    assert corpus == held_out.corpus  # same ids, same texts: questions point into it
    trained_on = {q for qs in pseudo_queries(corpus, 0).values() for q in qs}
    assert not trained_on & set(held_out.queries.values())

    svc.tune_embedder(
        settings,
        Registry(settings.home_dir),
        svc.TuneRequest(
            name="xquad-sub",
            synth=svc.SynthRequest(corpus=paragraphs, val_fraction=0.0),
            max_seq_length=SEQ,
        ),
    )
    pool = EmbedderPool(Registry(settings.home_dir), precision="fp32", capacity=2)
    scores = {}
    for name in (BASE, "xquad-sub"):
        emb = pool.get(name)
        emb.model.max_seq_length = SEQ  # both models read the same text
        scores[name] = evaluate(held_out, emb)
    base, tuned = scores[BASE], scores["xquad-sub"]
    gain = tuned["mrr@10"] - base["mrr@10"]
    reduction = error_reduction(base, tuned)
    print(f"MRR@10 {base['mrr@10']:.4f} -> {tuned['mrr@10']:.4f}, error -{reduction:.1%}")
    assert gain >= MIN_GAIN and reduction >= MIN_REDUCTION, (base, tuned)
    assert tuned["hit@1"] >= base["hit@1"]


SEQ = 128
# Measured (seeded, 2-core CPU): MRR@10 0.9621 -> 0.9711, error (1 - MRR@10) -23.7%, in
# ~85 s. The margins are half of that: a tuner that learned nothing, or the base model
# registered as the tuned one, fails here.
MIN_GAIN = 0.0045
MIN_REDUCTION = 0.12


# ---- 2. resume after kill -9 ---------------------------------------------------------------

RESUME_ROWS, RESUME_BATCH, RESUME_EPOCHS = 48, 8, 2
RESUME_STEPS = RESUME_ROWS // RESUME_BATCH * RESUME_EPOCHS  # 12, a checkpoint after each


def resume_pairs(path: Path) -> Path:
    texts = [p.read_text(errors="ignore") for p in sorted((SAMPLES / "corpus").glob("*.md"))]
    rows = [
        {"text": s.strip()[:80], "text_pos": t[:300]}
        for t in texts
        for s in t.split("\n")
        if len(s.split()) > 6
    ][:RESUME_ROWS]
    assert len(rows) == RESUME_ROWS
    return write_jsonl(path, rows)


def wait_for(what: str, cond: Callable[[], bool], proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 300
    while not cond():
        assert proc.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"no {what} in 300 s"
        time.sleep(0.05)


def weights(entry: Entry[EmbedderRecord]) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(entry.dir / "model" / "model.safetensors")


def test_tune_resumes_after_kill_9_to_the_weights_of_an_uninterrupted_run(
    settings: EmbedSettings, tmp_path: Path
) -> None:
    registry = Registry(settings.home_dir)
    pairs = resume_pairs(tmp_path / "pairs.jsonl")
    args = [
        "--pairs",
        str(pairs),
        "--name",
        "resumed",
        "--epochs",
        str(RESUME_EPOCHS),
        "--batch-size",
        str(RESUME_BATCH),
        "--max-seq-length",
        "64",
    ]
    work = work_dir(registry, "resumed")
    proc = subprocess.Popen(
        [sys.executable, "-m", "platform_cli.main", "embed", "tune", *args],
        env={**os.environ, "TUNESTACK_HOME": str(settings.home_dir)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for("a checkpoint", lambda: latest_checkpoint(work) is not None, proc)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert not (registry.entry_dir("embedder", "resumed") / "meta.json").exists()
    found = latest_checkpoint(work)
    assert found is not None
    ckpt = found[0]
    assert ckpt < RESUME_STEPS, "killed too late to test a resume"

    out = tune_cli(settings, *args)  # the same command again
    assert f"resumed from checkpoint-{ckpt}" in out
    rec = record(settings, "resumed")
    assert rec.resumed_from == ckpt
    # this invocation trained only what was left: it continued, it did not restart
    assert rec.metrics["trained_steps"] == [ckpt + 1, RESUME_STEPS]
    log = [json.loads(x) for x in (registry.embedder("resumed").dir / "trainer_log.jsonl").open()]
    assert [h["step"] for h in log if "loss" in h] == list(range(1, RESUME_STEPS + 1))

    # An uninterrupted run of the same data and seed ends with the same weights: the
    # optimizer, scheduler, RNG and batch order (NO_DUPLICATES, seeded per epoch) were
    # restored, and the batches before the checkpoint were skipped, not retrained.
    ticks: list[tuple[int, int, str]] = []
    ref = svc.tune_embedder(
        settings,
        registry,
        svc.TuneRequest(
            name="uninterrupted",
            pairs=pairs,
            epochs=RESUME_EPOCHS,
            batch_size=RESUME_BATCH,
            max_seq_length=64,
        ),
        lambda d, t, m: ticks.append((d, t, m)),
    )
    assert ref.record.resumed_from is None and ticks[0][0] == 1
    assert not any(m.startswith(svc.RESUMED) for _, _, m in ticks)
    a, b = weights(registry.embedder("resumed")), weights(ref)
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= RESUME_TOLERANCE, worst


RESUME_TOLERANCE = 0.0


# ---- 3. losses, hard negatives, matryoshka -------------------------------------------------


@pytest.mark.parametrize(
    ("loss", "kind", "module"),
    [
        ("cached-mnrl", "pair", "CachedMultipleNegativesRankingLoss"),
        ("triplet", "triplet", "TripletLoss"),
        ("cosent", "scored", "CoSENTLoss"),
    ],
)
def test_loss_option_is_the_loss_the_trainer_runs(
    settings: EmbedSettings, tmp_path: Path, loss: str, kind: str, module: str
) -> None:
    name = f"loss-{loss}"
    tune_cli(
        settings, "--pairs", str(records(tmp_path, kind)), "--name", name, "--loss", loss, *TINY
    )
    rec = record(settings, name)
    assert rec.parameters["loss"] == loss
    assert rec.parameters["loss_module"] == module  # read back from the trainer's loss
    assert rec.metrics["trained_steps"][1] >= 2
    assert rec.fingerprint != record(settings, BASE).fingerprint


def test_hard_negatives_are_mined_into_the_training_table(
    settings: EmbedSettings, tmp_path: Path
) -> None:
    pairs = records(tmp_path, "pair")
    tune_cli(settings, "--pairs", str(pairs), "--name", "hard-neg", "--hard-negatives", "2", *TINY)
    rec = record(settings, "hard-neg")
    assert rec.data is not None
    assert rec.data["columns"] == ["anchor", "positive", "negative_1", "negative_2"]
    assert rec.data["rows_trained"] >= 8
    assert rec.parameters["loss_module"] == "MultipleNegativesRankingLoss"

    # what is mined: other passages of the corpus, closer to the query than the rest
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(Registry(settings.home_dir).embedder(BASE).model_path))
    data = TrainData.from_records(load_records(pairs))
    params = TuneParams(base=BASE, name="x", hard_negatives=2)
    table = training_table(model, params, data)
    assert table.column_names == rec.data["columns"]
    passages = data.corpus
    vecs = dict(zip(passages, model.encode(passages, normalize_embeddings=True), strict=True))
    for row in table:
        negs = [row["negative_1"], row["negative_2"]]
        assert set(negs) <= set(passages) and row["positive"] not in negs
        q = model.encode(row["anchor"], normalize_embeddings=True)
        score = {p: float(vecs[p] @ q) for p in passages}
        # the hardest passages that are not within 5% of the positive's score (mining's
        # relative_margin), best first: not random ones
        eligible = sorted(
            (
                p
                for p in passages
                if p != row["positive"] and score[p] <= score[row["positive"]] * 0.95 + 1e-4
            ),
            key=score.__getitem__,
            reverse=True,
        )
        assert [score[n] for n in negs] == pytest.approx([score[p] for p in eligible[:2]], abs=1e-4)


def test_matryoshka_wraps_the_loss_at_the_given_dimensions(
    settings: EmbedSettings, tmp_path: Path
) -> None:
    pairs = records(tmp_path, "pair")
    tune_cli(settings, "--pairs", str(pairs), "--name", "mrl", "--matryoshka", "64,384", *TINY)
    rec = record(settings, "mrl")
    assert rec.parameters["matryoshka"] == [64, 384]
    assert rec.parameters["loss_module"] == (
        "MatryoshkaLoss(MultipleNegativesRankingLoss, dims=[384, 64])"
    )
