"""Embedding tuner end to end: real training, real evaluation, served through the API."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from services.common.embedders import SentenceTransformerEmbedder
from services.common.ir_eval import evaluate
from services.common.qa import load_qa
from services.common.registry import Registry
from tests.conftest import SAMPLES, shared_data
from tests.integration.conftest import Stack


def cli(stack: Stack, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return stack.cli(*args, timeout=timeout)


def small_squad(src: Path, dest: Path, articles: int) -> Path:
    data = json.loads(src.read_text(encoding="utf-8"))
    dest.write_text(
        json.dumps({"data": data["data"][:articles]}, ensure_ascii=False), encoding="utf-8"
    )
    return dest


def test_metrics_equal_sentence_transformers_evaluator(
    embedder: SentenceTransformerEmbedder,
) -> None:
    from sentence_transformers.evaluation import InformationRetrievalEvaluator

    ds = load_qa(shared_data("xquad", "xquad.en.json"))
    ds = ds.subset(sorted(ds.queries)[:400])
    fp32 = SentenceTransformerEmbedder(
        embedder.name, embedder.fingerprint, embedder.model, precision="fp32"
    )
    ours = evaluate(ds, fp32, top_k=10)
    ref = InformationRetrievalEvaluator(
        ds.queries,
        ds.corpus,
        {q: set(d) for q, d in ds.relevant_docs.items()},
        write_csv=False,
        batch_size=32,
    )(embedder.model)
    pairs = {
        "hit@1": "cosine_accuracy@1",
        "hit@3": "cosine_accuracy@3",
        "hit@5": "cosine_accuracy@5",
        "hit@10": "cosine_accuracy@10",
        "mrr@10": "cosine_mrr@10",
        "ndcg@10": "cosine_ndcg@10",
        "map@100": "cosine_map@100",
        "recall@10": "cosine_recall@10",
        "precision@3": "cosine_precision@3",
    }
    for ours_key, ref_key in pairs.items():
        assert ours[ours_key] == pytest.approx(ref[ref_key], abs=1e-6), ours_key


def test_tune_from_docs_then_serve_compare_and_eval(stack: Stack, tmp_path: Path) -> None:
    r = cli(
        stack,
        "embed",
        "tune",
        "--docs",
        str(SAMPLES / "corpus"),
        "--name",
        "kb-tuned",
        "--per-chunk",
        "2",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--max-seq-length",
        "128",  # the sample chunks' pseudo-queries and passages; 256 doubles the time
        "--json",
    )
    assert r.returncode == 0, r.stderr
    meta = json.loads(r.stdout)
    entry = Registry(stack.home).get("embedder", "kb-tuned")
    base = Registry(stack.home).get("embedder", "all-minilm-l6-v2")
    assert meta["base_model"] == "all-minilm-l6-v2" and entry.fingerprint != base.fingerprint
    assert meta["data"]["rows"] > 16 and meta["metrics"]["validation"]
    for f in ("model/config.json", "training_loss.png", "trainer_log.jsonl", "meta.json"):
        assert (entry.dir / f).exists(), f
    assert not (entry.dir.parent / ".work-kb-tuned").exists()

    # served by the API under its registry name, OpenAI shape
    emb = httpx.post(
        f"{stack.api}/v1/embeddings", json={"model": "kb-tuned", "input": "hi"}, timeout=120
    ).json()
    assert len(emb["data"][0]["embedding"]) == 384

    # a collection built with the base embedder, reindexed for the tuned one, compared
    assert cli(stack, "ingest", str(SAMPLES / "corpus"), "-c", "cmp").returncode == 0
    assert cli(stack, "reindex", "cmp", "--embedder", "kb-tuned").returncode == 0
    q = json.loads((SAMPLES / "questions.json").read_text())[0]["question"]
    r = cli(
        stack,
        "ask",
        q,
        "-c",
        "cmp",
        "--compare",
        "all-minilm-l6-v2,kb-tuned",
        "--json",
        "--top-k",
        "3",
    )
    assert r.returncode == 0, r.stderr
    cols = json.loads(r.stdout)
    assert set(cols) == {"all-minilm-l6-v2", "kb-tuned"}
    assert all(h["movement"] == "=" for h in cols["all-minilm-l6-v2"])
    assert all(h["movement"] for h in cols["kb-tuned"])

    # eval writes the JSON the issue specifies plus a report folder
    qa = tmp_path / "kb.json"
    from services.embed_tuner.synth import synthesize

    train, _ = synthesize(
        {
            f"c{i}": p.read_text(errors="ignore")[:1500]
            for i, p in enumerate(sorted((SAMPLES / "corpus").glob("*.md")))
        },
        per_chunk=3,
        val_fraction=0.0,
    )
    train.save(qa)
    out = tmp_path / "metrics.json"
    r = cli(
        stack,
        "embed",
        "eval",
        "--dataset",
        str(qa),
        "--model",
        "all-minilm-l6-v2",
        "--model",
        "kb-tuned",
        "--json",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    models = json.loads(out.read_text())["models"]
    assert set(models) == {"all-minilm-l6-v2", "kb-tuned"}
    assert 0 <= models["kb-tuned"]["mrr@10"] <= 1 and "ndcg@10" in models["kb-tuned"]
    report = sorted((stack.home / "reports").glob("eval-*"))[-1]
    assert {"report.json", "report.md", "metrics.png"} <= {p.name for p in report.iterdir()}


def test_llm_question_synthesis_resumes(stack: Stack, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    facts = [
        "The LO-200 Path Light costs 49 EUR and has a 3-year warranty.",
        "Support is open Monday to Friday from 9:00 to 17:00 CET.",
        "Lumen & Oak was founded in 2016 in Kestrelmoor.",
        "The Garden Hub controls up to 32 lights over the OakLink mesh radio.",
    ]
    corpus.write_text(
        "".join(json.dumps({"id": f"f{i}", "text": t}) + "\n" for i, t in enumerate(facts))
    )
    out = tmp_path / "llm.json"
    args = [
        "embed",
        "synth",
        "--corpus",
        str(corpus),
        "--out",
        str(out),
        "--llm",
        stack.settings.llm_url,
        "--per-chunk",
        "2",
        "--val-fraction",
        "0",
    ]
    r = cli(stack, *args)
    assert r.returncode == 0, r.stderr
    cache = out.with_suffix(".partial.jsonl")
    lines = cache.read_text().splitlines()
    assert len(lines) == 4
    ds = load_qa(out)
    assert ds.queries and all(q.strip() for q in ds.queries.values())
    r = cli(stack, *args)  # everything cached: no new generation
    assert r.returncode == 0 and cache.read_text().splitlines() == lines


def test_chinese_mechanics(
    stack: Stack, tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    """MiniLM is English-only: this checks the Chinese path works, not its quality."""
    cmrc = shared_data("cmrc2018", "cmrc2018_trial.json")
    zh = load_qa(small_squad(shared_data("xquad", "xquad.zh.json"), tmp_path / "zh.json", 3))
    m = evaluate(zh, embedder)
    assert 0 < m["mrr@10"] <= 1 and m["queries"] == len(zh.queries)
    out = tmp_path / "cmrc-train.json"
    r = cli(
        stack,
        "embed",
        "synth",
        "--corpus",
        str(small_squad(cmrc, tmp_path / "c.json", 5)),
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    qs = list(load_qa(out).queries.values())
    assert qs and all(any("\u4e00" <= ch <= "\u9fff" for ch in q) for q in qs)
    cmrc_questions = {
        qa["question"]
        for a in json.loads(cmrc.read_text())["data"]
        for p in a["paragraphs"]
        for qa in p["qas"]
    }
    assert not cmrc_questions & set(qs)  # built from paragraphs, never from questions


def test_bad_inputs_are_clear_and_leave_nothing(stack: Stack, tmp_path: Path) -> None:
    emb_dir = Registry(stack.home).kind_dir("embedder")
    before = sorted(p.name for p in emb_dir.iterdir()) if emb_dir.exists() else []
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    bad = tmp_path / "bad.json"
    bad.write_text('{"queries": {"q": "x"}, "corpus": {"c": "y"}, "relevant_docs": {"q": ["z"]}}')
    few = tmp_path / "few.jsonl"
    few.write_text('{"text": "a b c", "text_pos": "d e f"}\n' * 3)
    cases = [
        (["embed", "tune", "--corpus", str(empty), "--name", "x1"], "corpus is empty"),
        (["embed", "tune", "--pairs", str(bad), "--name", "x2"], "missing from the corpus: z"),
        (["embed", "tune", "--pairs", str(few), "--name", "x3"], "fewer than one batch"),
        (["embed", "tune", "--pairs", str(few), "--name", "x4", "--base", "nope"], "Registered: "),
        (
            ["embed", "eval", "--dataset", str(bad), "--model", "all-minilm-l6-v2"],
            "missing from the corpus",
        ),
        (
            ["embed", "eval", "--dataset", str(SAMPLES / "questions.json"), "--model", "x"],
            "relevant",
        ),
    ]
    for args, message in cases:
        r = cli(stack, *args)
        assert r.returncode == 1, (args, r.stdout)
        assert message in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr
    after = sorted(p.name for p in emb_dir.iterdir()) if emb_dir.exists() else []
    assert [n for n in after if not n.startswith(".")] == [
        n for n in before if not n.startswith(".")
    ]
