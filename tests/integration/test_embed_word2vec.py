"""The Word2Vec skip-gram baseline (issue 15, part 3): trained by `embed word2vec` on a
corpus alone, registered, and compared by `embed eval` beside the transformer embedders,
in English and (jieba words) in Chinese. Full-set figures are in the README."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import shared_data
from tests.integration.conftest import Stack
from tests.integration.test_embed_tuner import small_squad


def eval_json(stack: Stack, dataset: Path, out: Path, *models: str) -> dict:
    args = [a for m in models for a in ("--model", m)]
    r = stack.cli("embed", "eval", "--dataset", str(dataset), *args, "--json", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(out.read_text())["models"]


def test_word2vec_baseline_trains_on_the_corpus_and_ranks_below_minilm(
    stack: Stack, tmp_path: Path
) -> None:
    en = small_squad(shared_data("xquad", "xquad.en.json"), tmp_path / "en.json", 12)
    r = stack.cli("embed", "word2vec", "--name", "w2v-en", "--corpus", str(en))
    assert r.returncode == 0, r.stdout + r.stderr
    rec = json.loads((stack.home / "models/embedders/w2v-en/meta.json").read_text())
    assert rec["provider"] == "word2vec" and rec["dimension"] == 200
    assert rec["parameters"]["epochs"] == 100 and rec["data"]["passages"] == 60
    # seeded, one worker: the same corpus gives the same vectors
    r = stack.cli("embed", "word2vec", "--name", "w2v-en2", "--corpus", str(en))
    assert r.returncode == 0, r.stdout + r.stderr
    again = json.loads((stack.home / "models/embedders/w2v-en2/meta.json").read_text())
    assert again["fingerprint"] == rec["fingerprint"]

    m = eval_json(stack, en, tmp_path / "en-eval.json", "all-minilm-l6-v2", "w2v-en")
    # 60 paragraphs: a random ranking scores MRR@10 ~ 0.05
    assert 0.4 < m["w2v-en"]["mrr@10"] < m["all-minilm-l6-v2"]["mrr@10"], m

    zh = small_squad(shared_data("xquad", "xquad.zh.json"), tmp_path / "zh.json", 12)
    r = stack.cli("embed", "word2vec", "--name", "w2v-zh", "--corpus", str(zh))
    assert r.returncode == 0, r.stdout + r.stderr
    m = eval_json(stack, zh, tmp_path / "zh-eval.json", "all-minilm-l6-v2", "w2v-zh")
    # MiniLM barely knows Chinese; word vectors over jieba words do
    assert m["w2v-zh"]["mrr@10"] > m["all-minilm-l6-v2"]["mrr@10"] + 0.2, m

    r = stack.cli("embed", "word2vec", "--name", "w2v-en", "--corpus", str(en))
    assert r.returncode != 0 and "already exists" in r.stdout + r.stderr
