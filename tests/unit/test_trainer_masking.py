"""Chat templates and loss masks on the real SmolLM2 tokenizer: only what the assistant
writes is trained, in every assistant turn, and the tokens match the full rendering."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from services.common.errors import BadInput
from services.trainer.datasets import Conversation, Message
from services.trainer.preprocess import (
    PadCollator,
    PrepStats,
    build_examples,
    encode_sft,
    pack_examples,
    split_budget,
    split_validation,
)
from services.trainer.templates import IGNORE_INDEX, ChatTemplate, resolve_template
from tests.unit._trainer_helpers import smollm2_tokenizer


@pytest.fixture(scope="module")
def tok() -> Any:
    return smollm2_tokenizer()


def conv(*turns: str, system: str | None = None, tools: Any = None) -> Conversation:
    roles = ["user", "assistant"]
    msgs = [Message(roles[i % 2], t) for i, t in enumerate(turns)]  # type: ignore[arg-type]
    return Conversation("test", 0, msgs, system=system, tools=tools)


def trained_spans(tok: Any, ids: list[int], labels: list[int]) -> list[str]:
    spans, cur = [], []
    for i, lab in zip(ids, labels, strict=True):
        if lab != IGNORE_INDEX:
            assert lab == i  # labels are the token itself (the model shifts)
            cur.append(i)
        elif cur:
            spans.append(tok.decode(cur))
            cur = []
    if cur:
        spans.append(tok.decode(cur))
    return spans


def test_tokenizer_template_adds_its_default_system_prompt(tok: Any) -> None:
    t = resolve_template(None, tok)
    text = t.prompt_text(tok, [Message("user", "Hi")])
    assert text == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert t.prompt_text(tok, [Message("user", "Hi")], system="Be brief.").startswith(
        "<|im_start|>system\nBe brief.<|im_end|>"
    )
    assert t.stop_words == ["<|im_end|>"] and t.stop_token_ids(tok) == [2]


def test_builtin_chatml_has_no_default_system_and_unknown_names_are_refused(tok: Any) -> None:
    t = resolve_template("chatml", tok, default_system=None)
    assert t.prompt_text(tok, [Message("user", "Hi")]).startswith("<|im_start|>user\nHi")
    q = resolve_template("qwen", tok)
    assert "You are Qwen" in q.prompt_text(tok, [Message("user", "Hi")])
    with pytest.raises(BadInput) as e:
        resolve_template("vicuna", tok)
    assert "chatml" in (e.value.hint or "")


def test_single_turn_trains_only_the_reply_and_end_of_turn(tok: Any) -> None:
    t = resolve_template(None, tok)
    ids, labels, cut = encode_sft(conv("What costs 49 EUR?", "The LO-200."), tok, t, 512)
    assert not cut
    assert trained_spans(tok, ids, labels) == ["The LO-200.<|im_end|>\n"]
    full = t.render(
        tok,
        t.messages_for(conv("What costs 49 EUR?", "The LO-200.").messages, None)[0],
        add_generation_prompt=False,
    )
    assert tok.encode(full, add_special_tokens=False) == ids


def test_every_assistant_turn_is_trained_in_multi_turn_data(tok: Any) -> None:
    t = resolve_template(None, tok)
    c = conv("Hi", "Hello!", "Price?", "49 EUR.", "Warranty?", "3 years.", system="S")
    ids, labels, _ = encode_sft(c, tok, t, 512)
    assert trained_spans(tok, ids, labels) == [
        "Hello!<|im_end|>\n",
        "49 EUR.<|im_end|>\n",
        "3 years.<|im_end|>\n",
    ]
    untrained = tok.decode([i for i, lab in zip(ids, labels, strict=True) if lab == IGNORE_INDEX])
    assert "Price?" in untrained and "49 EUR" not in untrained and "system\nS" in untrained
    _, masked, _ = encode_sft(c, tok, t, 512, mask_history=True)
    assert trained_spans(tok, ids, masked) == ["3 years.<|im_end|>\n"]
    _, all_labels, _ = encode_sft(c, tok, t, 512, train_on_prompt=True)
    assert all(lab != IGNORE_INDEX for lab in all_labels)


def test_tool_calls_and_observations(tok: Any) -> None:
    t = resolve_template(None, tok)
    c = Conversation(
        "test",
        0,
        [
            Message("user", "weather?"),
            Message("assistant", '{"name": "w"}'),
            Message("tool", "sunny"),
            Message("assistant", "Sunny."),
        ],
        tools=[{"name": "w"}],
    )
    ids, labels, _ = encode_sft(c, tok, t, 512)
    assert trained_spans(tok, ids, labels) == ['{"name": "w"}<|im_end|>\n', "Sunny.<|im_end|>\n"]
    text = tok.decode(ids)
    assert "<|im_start|>tool\nsunny" in text
    assert (
        'You have access to the following tools:\n[{"name": "w"}]' in text
    )  # no tools in template


def test_non_incremental_template_is_refused(tok: Any) -> None:
    last_only = "{{ messages[-1]['content'] }}{% if add_generation_prompt %}>{% endif %}"
    t = ChatTemplate("odd", last_only, ["</s>"], source=last_only)
    with pytest.raises(BadInput, match="incrementally"):
        encode_sft(conv("a", "b", "c", "d"), tok, t, 64)


def test_split_budget_follows_llamafactory() -> None:
    assert split_budget(10, 5, 100) == (10, 5)
    assert split_budget(200, 20, 100) == (80, 20)  # short response kept whole
    assert split_budget(20, 200, 100) == (20, 80)  # short prompt kept whole
    assert split_budget(100, 100, 100) == (50, 50)  # both cut in proportion


def test_truncation_and_dropping_are_counted(tok: Any) -> None:
    t = resolve_template("chatml", tok)
    long_q = "word " * 200
    convs = [conv("short?", "yes"), conv(long_q, "the answer"), conv("q1", "a1", long_q, "a2")]
    stats = PrepStats()
    exs = build_examples(convs, tok, t, stage="sft", cutoff_len=40, packing=False, stats=stats)
    assert stats.truncated == 2 and stats.dropped == 0 and len(exs) == 3
    assert all(len(e.input_ids) <= 40 for e in exs)
    assert trained_spans(tok, exs[1].input_ids, exs[1].labels) == ["the answer<|im_end|>\n"]
    stats = PrepStats()
    left = build_examples(
        [conv("q" * 5, "a"), conv("hello", "x")],
        tok,
        t,
        stage="sft",
        cutoff_len=3,
        packing=False,
        stats=stats,
    )
    assert stats.truncated == 2 and stats.dropped == 2 and left == []  # no response token fits


def test_packing_keeps_every_sample_once_within_cutoff(tok: Any) -> None:
    t = resolve_template("chatml", tok)
    convs = [conv(f"question {i} " * (i % 5 + 1), f"answer {i}") for i in range(20)]
    exs = build_examples(convs, tok, t, stage="sft", cutoff_len=64, packing=False)
    packed = pack_examples(exs, 64)
    assert len(packed) < len(exs)
    assert sorted(s for p in packed for s in p.sample_ids) == list(range(20))
    assert all(len(p.input_ids) <= 64 for p in packed)
    assert sum(len(p.input_ids) for p in packed) == sum(len(e.input_ids) for e in exs)


def test_pt_stage_trains_every_token_plus_eos(tok: Any) -> None:
    t = resolve_template(None, tok)
    c = Conversation("t", 0, [Message("user", "Lumen & Oak makes garden lights.")])
    (ex,) = build_examples([c], tok, t, stage="pt", cutoff_len=64, packing=False)
    assert ex.labels == ex.input_ids and ex.input_ids[-1] == tok.eos_token_id
    blocks = build_examples([c] * 10, tok, t, stage="pt", cutoff_len=16, packing=True)
    assert all(len(b.input_ids) <= 16 for b in blocks) and len(blocks) > 1


def test_collator_pads_labels_with_ignore_index() -> None:
    batch = PadCollator(pad_token_id=2)(
        [
            {"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "sample_ids": [0]},
            {"input_ids": [8], "labels": [8], "sample_ids": [3, 4]},
        ]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 2, 2]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["sample_ids"].tolist() == [[0, -1], [3, 4]]
    assert batch["input_ids"].dtype == torch.long


def test_validation_split_is_seeded() -> None:
    from services.trainer.preprocess import Example

    exs = [Example([i], [i], [i]) for i in range(20)]
    tr, va = split_validation(exs, 0.25, seed=3)
    assert len(va) == 5 and len(tr) == 15
    assert [e.sample_ids for e in va] == [e.sample_ids for e in split_validation(exs, 0.25, 3)[1]]
    assert len(split_validation(exs, 4, seed=3)[1]) == 4
