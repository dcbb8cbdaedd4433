"""dataset_info.json, alpaca and sharegpt records, and validation errors that name
the file, the record and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.common.errors import BadInput
from services.trainer.datasets import load_dataset, load_datasets
from tests.conftest import SAMPLES
from tests.unit._trainer_helpers import write_dataset

ALPACA = {"file_name": "a.json", "columns": {"system": "system", "history": "history"}}
SHAREGPT = {"file_name": "s.jsonl", "formatting": "sharegpt", "columns": {"tools": "tools"}}


def test_alpaca_with_system_history_and_input(tmp_path: Path) -> None:
    d = write_dataset(
        tmp_path,
        {"a": ALPACA},
        {
            "a.json": [
                {
                    "instruction": "Translate",
                    "input": "Hallo",
                    "output": "Hello",
                    "system": "Be brief.",
                    "history": [["Hi", "Hi there"]],
                }
            ]
        },
    )
    conv = load_dataset("a", d).conversations[0]
    assert [(m.role, m.content) for m in conv.messages] == [
        ("user", "Hi"),
        ("assistant", "Hi there"),
        ("user", "Translate\nHallo"),
        ("assistant", "Hello"),
    ]
    assert conv.system == "Be brief."


def test_sharegpt_with_system_tools_and_function_turns(tmp_path: Path) -> None:
    rec = {
        "conversations": [
            {"from": "system", "value": "sys"},
            {"from": "human", "value": "weather?"},
            {"from": "function_call", "value": '{"name": "w", "arguments": {}}'},
            {"from": "observation", "value": "sunny"},
            {"from": "gpt", "value": "It is sunny."},
        ],
        "tools": json.dumps([{"name": "w", "description": "weather", "parameters": {}}]),
    }
    d = write_dataset(tmp_path, {"s": SHAREGPT}, {"s.jsonl": json.dumps(rec) + "\n"})
    conv = load_dataset("s", d).conversations[0]
    assert conv.system == "sys"
    assert [m.role for m in conv.messages] == ["user", "assistant", "tool", "assistant"]
    assert conv.tools[0]["name"] == "w"


def test_openai_formatting(tmp_path: Path) -> None:
    rec = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    d = write_dataset(
        tmp_path, {"o": {"file_name": "o.json", "formatting": "openai"}}, {"o.json": [rec]}
    )
    assert load_dataset("o", d).conversations[0].response == "a"


def test_every_bad_record_is_reported_with_file_index_and_field(tmp_path: Path) -> None:
    records = [
        {"instruction": "ok", "output": "fine"},
        {"instruction": "no output"},
        {"instruction": "x", "output": 3},
        {"instruction": "x", "output": "y", "history": [["only one"]]},
        "not an object",
    ]
    d = write_dataset(tmp_path, {"a": ALPACA}, {"a.json": records})
    with pytest.raises(BadInput) as e:
        load_dataset("a", d)
    msg = e.value.message
    assert msg.startswith("4 invalid record(s) in dataset 'a'")
    assert f"{d / 'a.json'} record 1, field 'output': is missing" in msg
    assert "record 2, field 'output': must be a string, got int" in msg
    assert "record 3, field 'history[0]': must be a pair of two strings" in msg
    assert "record 4, field '(record)'" in msg
    assert "record 0" not in msg


def test_sharegpt_errors_name_the_turn_and_jsonl_line(tmp_path: Path) -> None:
    lines = [
        json.dumps(
            {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}
        ),
        "",
        json.dumps(
            {"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "b"}]}
        ),
        json.dumps({"conversations": [{"from": "human", "value": "a"}]}),
        json.dumps(
            {"conversations": [{"from": "human", "value": 5}, {"from": "gpt", "value": "b"}]}
        ),
        json.dumps({"messages": []}),
    ]
    d = write_dataset(tmp_path, {"s": SHAREGPT}, {"s.jsonl": "\n".join(lines)})
    with pytest.raises(BadInput) as e:
        load_dataset("s", d)
    msg = e.value.message
    assert "record 1 (line 3), field 'conversations[0].from': is 'gpt'" in msg
    assert (
        "record 2 (line 4), field 'conversations[0]': the conversation must end with an assistant"
        in msg
    )
    assert "record 3 (line 5), field 'conversations[0].value': is missing or not a string" in msg
    assert "record 4 (line 6), field 'conversations': is missing or not a list" in msg


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    d = write_dataset(tmp_path, {"s": SHAREGPT}, {"s.jsonl": '{"conversations": []}\n{oops\n'})
    with pytest.raises(BadInput, match=r"record 1 \(line 2\) is not valid JSON"):
        load_dataset("s", d)


def test_empty_samples_are_counted_not_fatal(tmp_path: Path) -> None:
    records = [
        {"instruction": "q", "output": "a"},
        {"instruction": "q", "output": ""},
        {"instruction": "", "input": "", "output": "a"},
    ]
    d = write_dataset(tmp_path, {"a": ALPACA}, {"a.json": records})
    loaded = load_dataset("a", d)
    assert (loaded.records, loaded.empty, len(loaded.conversations)) == (3, 2, 1)


def test_preference_records_are_validated_then_refused_for_sft(tmp_path: Path) -> None:
    entry = {
        "file_name": "p.json",
        "ranking": True,
        "columns": {"chosen": "chosen", "rejected": "rejected"},
    }
    bad = [{"instruction": "q", "chosen": "good"}]
    d = write_dataset(tmp_path / "bad", {"p": entry}, {"p.json": bad})
    with pytest.raises(BadInput, match="record 0, field 'rejected'"):
        load_dataset("p", d)
    good = [{"instruction": "q", "chosen": "good", "rejected": "bad"}]
    d = write_dataset(tmp_path / "good", {"p": entry}, {"p.json": good})
    assert load_dataset("p", d).conversations[0].chosen is not None
    with pytest.raises(BadInput, match="preference records"):
        load_datasets(["p"], d, stage="sft", max_samples=None, seed=1)


def test_unknown_dataset_and_missing_files(tmp_path: Path) -> None:
    d = write_dataset(tmp_path, {"a": ALPACA, "gone": {"file_name": "nope.json"}}, {"a.json": []})
    with pytest.raises(BadInput) as e:
        load_dataset("b", d)
    assert "Defined: a, gone" in (e.value.hint or "")
    with pytest.raises(BadInput, match="does not exist"):
        load_dataset("gone", d)
    with pytest.raises(BadInput, match=r"No dataset_info\.json"):
        load_dataset("a", tmp_path / "elsewhere")


def test_max_samples_and_num_samples(tmp_path: Path) -> None:
    recs = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(10)]
    d = write_dataset(tmp_path, {"a": ALPACA, "n": {**ALPACA, "num_samples": 4}}, {"a.json": recs})
    assert [c.response for c in load_dataset("a", d, max_samples=3).conversations] == [
        "a0",
        "a1",
        "a2",
    ]
    sampled = load_dataset("n", d, seed=7).conversations
    assert len(sampled) == 4 and sampled == load_dataset("n", d, seed=7).conversations


def test_project_dataset_is_valid_and_heldout_is_disjoint() -> None:
    d = SAMPLES / "llm_sft"
    loaded = load_datasets(
        ["lumen_identity", "lumen_qa", "lumen_chat", "lumen_heldout"],
        d,
        stage="sft",
        max_samples=None,
        seed=42,
    )
    counts = {x.attr.name: len(x.conversations) for x in loaded}
    assert sum(counts.values()) >= 190 and all(x.empty == 0 for x in loaded)
    assert counts["lumen_heldout"] >= 30
    chat = next(x for x in loaded if x.attr.name == "lumen_chat")
    assert all(len(c.messages) >= 4 for c in chat.conversations)  # multi-turn
    train_q = {c.messages[0].content for x in loaded[:2] for c in x.conversations}
    train_q |= {m.content for c in chat.conversations for m in c.messages if m.role == "user"}
    held = {c.messages[0].content for c in loaded[3].conversations}
    assert not held & train_q
    questions = json.loads((SAMPLES / "questions.json").read_text(encoding="utf-8"))
    assert {q["question"] for q in questions} <= held
