from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.common.errors import BadInput
from services.common.ir_eval import error_reduction, search
from services.common.qa import QADataset, detect, load_qa, split_queries, squad_to_qa
from services.embed_tuner.corpus import load_corpus_file
from services.embed_tuner.pseudo_queries import candidates, pseudo_queries
from services.embed_tuner.records import load_records
from services.embed_tuner.synth import parse_questions

SQUAD = {
    "data": [
        {
            "title": "T",
            "paragraphs": [
                {
                    "context": "Alpha is first. It was made in 1990.",
                    "qas": [{"id": "q1", "question": "What is first?", "answers": []}],
                },
                {
                    "context": "Beta is second.",
                    "qas": [
                        {"id": "q2", "question": "What is second?", "answers": []},
                        {"id": "q3", "question": "Which one is second?", "answers": []},
                    ],
                },
            ],
        }
    ]
}


def write(p: Path, obj: object) -> Path:
    p.write_text(json.dumps(obj), encoding="utf-8")
    return p


def test_squad_is_converted_question_to_paragraph(tmp_path: Path) -> None:
    ds = load_qa(write(tmp_path / "s.json", SQUAD))
    assert len(ds.corpus) == 2 and len(ds.queries) == 3
    assert ds.relevant_docs["q3"] == ds.relevant_docs["q2"] != ds.relevant_docs["q1"]
    assert detect(tmp_path / "s.json") == "squad"


def test_qa_json_roundtrip_and_missing_ids(tmp_path: Path) -> None:
    ds = squad_to_qa(SQUAD)
    ds.save(tmp_path / "qa.json")
    assert load_qa(tmp_path / "qa.json").queries == ds.queries
    bad = ds.to_json()
    bad["relevant_docs"]["q1"] = ["nope"]
    with pytest.raises(BadInput, match="missing from the corpus: nope"):
        load_qa(write(tmp_path / "bad.json", bad))


def test_corpus_file_never_reads_questions(tmp_path: Path) -> None:
    corpus = load_corpus_file(write(tmp_path / "s.json", SQUAD))
    assert sorted(corpus.values()) == ["Alpha is first. It was made in 1990.", "Beta is second."]


@pytest.mark.parametrize(
    ("rows", "kind"),
    [
        ([{"text": "q", "text_pos": "p"}], "pair"),
        ([{"text": "q", "text_pos": "p", "text_neg": "n"}], "triplet"),
        ([{"sentence1": "a", "sentence2": "b", "label": 0.5}], "scored"),
    ],
)
def test_uniem_record_kinds(tmp_path: Path, rows: list[dict], kind: str) -> None:
    p = tmp_path / "r.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert load_records(p).kind == kind
    assert load_records(write(tmp_path / "r.json", rows)).kind == kind


def test_record_errors_name_line_and_field(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    p.write_text('{"text": "q", "text_pos": "p"}\n{"text": "q2"}\n')
    with pytest.raises(BadInput, match=r"line 2: missing field 'text_pos'"):
        load_records(p)
    p.write_text('{"text": "q", "text_pos": "p"}\n{"text": "q2", "text_pos": \n')
    with pytest.raises(BadInput, match="line 2: invalid JSON"):
        load_records(p)
    p.write_text('{"sentence1": "a", "sentence2": "b", "label": "high"}\n')
    with pytest.raises(BadInput, match="'label' must be a number"):
        load_records(p)
    bad_json = tmp_path / "b.json"
    bad_json.write_text('{"queries": {"a": 1},\n "corpus": }')
    with pytest.raises(BadInput, match="line 2"):
        load_qa(bad_json)


def test_split_by_query_keeps_all_passages() -> None:
    corpus = {f"p{i}": f"passage {i}" for i in range(10)}
    queries = {f"q{i}": f"query {i}" for i in range(100)}
    rel = {f"q{i}": [f"p{i % 10}"] for i in range(100)}
    train, val = split_queries(QADataset(queries, corpus, rel), 0.2)
    assert len(val.queries) == 20 and len(train.queries) == 80
    assert not set(train.queries) & set(val.queries)
    assert {d for q in train.relevant_docs.values() for d in q} == set(corpus)


def test_parse_questions_cleans_llm_output() -> None:
    passage = "The LO-200 Path Light costs 49 EUR. It has a 3-year warranty."
    raw = """Here are 3 questions:

1. How much does the LO-200 Path Light cost?
2) How much does the LO-200 Path Light cost?
- What warranty does it have?
Q3: The LO-200 Path Light costs 49 EUR.
**What is the price in euros?**
"""
    qs = parse_questions(raw, passage, 5)
    assert qs == [
        "How much does the LO-200 Path Light cost?",
        "What warranty does it have?",
        "What is the price in euros?",
    ]
    assert parse_questions(raw, passage, 1) == qs[:1]
    one_line = "What was the lineup? How many sacks did they have? Answer: none"
    assert parse_questions(one_line, passage, 5) == [
        "What was the lineup?",
        "How many sacks did they have?",
    ]


def test_pseudo_queries_are_deterministic_and_from_the_passage() -> None:
    p = (
        "The Panthers finished the regular season with a 15–1 record, and quarterback Cam "
        "Newton was named the NFL Most Valuable Player. They were founded in 1995."
    )
    cands = candidates(p, random.Random(0))
    assert p.split(". ")[0] + "." in cands
    assert any(c.startswith("When") and "1995" not in c for c in cands)
    assert pseudo_queries({"a": p}, 0)["a"] == [
        p.split(". ")[0] + ".",
        "They were founded in 1995.",
    ]
    mixed = pseudo_queries({"a": p}, 3, method="mixed")
    assert mixed == pseudo_queries({"a": p}, 3, method="mixed") and len(mixed["a"]) == 3
    zh = pseudo_queries({"z": "北京是中国的首都。上海是中国最大的城市，人口超过两千万。"}, 0)["z"]
    assert "北京是中国的首都。" in zh


def test_offline_query_method_and_count_come_from_settings(tmp_path: Path) -> None:
    """`embed tune --corpus` with no options: every sentence, 2 epochs, lr 5e-5;
    TUNESTACK_EMBED_PSEUDO / _PER_CHUNK (or --pseudo / --per-chunk) change the queries."""
    from services.embed_tuner.service import SynthRequest, synthesize_pairs
    from services.embed_tuner.settings import EmbedSettings

    s = EmbedSettings(home=tmp_path)
    assert (s.pseudo, s.per_chunk, s.epochs, s.lr) == ("sentences", 0, 2.0, 5e-5)
    p = (
        "The Panthers finished the regular season with a 15–1 record, and quarterback Cam "
        "Newton was named the NFL Most Valuable Player. They were founded in 1995 in "
        "Charlotte, North Carolina. Their stadium opened in 1996."
    )
    cache = tmp_path / "c.jsonl"

    def queries(s: EmbedSettings, **kw: Any) -> list[str]:
        train, val = synthesize_pairs(s, {"a": p}, SynthRequest(val_fraction=0.0, **kw), cache)
        assert not val.queries
        return list(train.queries.values())

    assert queries(s) == pseudo_queries({"a": p}, 0)["a"] and len(queries(s)) == 3
    mixed = EmbedSettings(home=tmp_path, pseudo="mixed", per_chunk=4)
    assert queries(mixed) == queries(mixed) and len(queries(mixed)) == 4
    assert set(queries(mixed)) <= set(candidates(p, random.Random(0)))
    assert queries(mixed, pseudo="sentences") == queries(s)[:4]


def test_exact_search_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    c = rng.normal(size=(500, 16)).astype(np.float32)
    q = rng.normal(size=(70, 16)).astype(np.float32)
    top = search(q, c, 10, block=16)
    ref = np.argsort(-(q @ c.T), axis=1)[:, :10]
    assert (top == ref).all()


def test_error_reduction() -> None:
    assert error_reduction({"mrr@10": 0.9}, {"mrr@10": 0.95}) == pytest.approx(0.5)
