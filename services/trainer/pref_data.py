"""Preference records -> token ids: chosen/rejected pairs (stage dpo) and labelled single
answers with their KL counterparts (stage kto), plus the collators that batch them.

Tokenized as LLaMA-Factory's pairwise and feedback processors do: the prompt is every
turn before the last answer (earlier assistant turns included, never trained), only the
last answer carries labels, and `cutoff_len` is shared by prompt and answer with the
prompt cut first (a pair's two answers get the same budget, so both see the same
prompt). KTO's KL term needs a prompt paired with an answer that does not belong to it;
like LLaMA-Factory, each record borrows the previous record's answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from services.common.errors import BadInput
from services.trainer.datasets import Conversation, Message
from services.trainer.preprocess import PrepStats, split_budget
from services.trainer.templates import IGNORE_INDEX, ChatTemplate


@dataclass
class PairExample:
    """One preference pair: the shared prompt and the two answers' tokens."""

    prompt: list[int]
    chosen: list[int]
    rejected: list[int]
    sample_ids: list[int]

    def as_dict(self) -> dict[str, Any]:
        mask = [IGNORE_INDEX] * len(self.prompt)
        return {
            "chosen_input_ids": self.prompt + self.chosen,
            "chosen_labels": mask + self.chosen,
            "rejected_input_ids": self.prompt + self.rejected,
            "rejected_labels": mask + self.rejected,
            "sample_ids": self.sample_ids,
        }


@dataclass
class FeedbackExample:
    """One KTO answer (desirable or not) and the same prompt with another record's answer."""

    input_ids: list[int]
    labels: list[int]
    kl_input_ids: list[int]
    kl_labels: list[int]
    kto_tag: bool
    sample_ids: list[int]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def prompt_and_answer(
    conv_messages: list[Message],
    system: str | None,
    tools: Any,
    tokenizer: Any,
    template: ChatTemplate,
) -> tuple[list[int], list[int], str]:
    """(prompt ids, last answer ids, prompt text) of a conversation ending with an answer.

    Segments are tokenized one by one, as SFT's are (preprocess.encode_sft), so a prompt
    is split into the same tokens in both stages.
    """
    segments = template.turn_segments(tokenizer, conv_messages, system, tools)
    prompt: list[int] = []
    for src, tgt in segments[:-1]:
        prompt += _ids(tokenizer, src) + _ids(tokenizer, tgt)
    last_src, last_tgt = segments[-1]
    prompt += _ids(tokenizer, last_src)
    return prompt, _ids(tokenizer, last_tgt), last_src


def encode_pair(
    conv: Conversation, tokenizer: Any, template: ChatTemplate, cutoff_len: int
) -> tuple[list[int], list[int], list[int], bool]:
    """(prompt, chosen, rejected, truncated) for one ranking record."""
    assert conv.chosen is not None and conv.rejected is not None
    prompt, chosen, text_c = prompt_and_answer(
        [*conv.messages, conv.chosen], conv.system, conv.tools, tokenizer, template
    )
    _, rejected, text_r = prompt_and_answer(
        [*conv.messages, conv.rejected], conv.system, conv.tools, tokenizer, template
    )
    if text_c != text_r:
        raise BadInput(
            f"{conv.source}: the '{template.name}' chat template renders the prompt "
            "differently for the chosen and the rejected answer.",
            hint="Use a template that renders turns incrementally, e.g. template: chatml.",
        )
    ns, nt = split_budget(len(prompt), max(len(chosen), len(rejected)), cutoff_len)
    truncated = ns < len(prompt) or nt < max(len(chosen), len(rejected))
    return prompt[:ns], chosen[:nt], rejected[:nt], truncated


def build_pair_examples(
    convs: list[Conversation],
    tokenizer: Any,
    template: ChatTemplate,
    *,
    cutoff_len: int,
    stats: PrepStats,
    first_id: int = 0,
) -> list[PairExample]:
    out: list[PairExample] = []
    for i, conv in enumerate(convs):
        prompt, chosen, rejected, cut = encode_pair(conv, tokenizer, template, cutoff_len)
        stats.truncated += int(cut)
        if not chosen or not rejected:
            stats.dropped += 1
            continue
        out.append(PairExample(prompt, chosen, rejected, [first_id + i]))
        stats.tokens += 2 * len(prompt) + len(chosen) + len(rejected)
        stats.label_tokens += len(chosen) + len(rejected)
    stats.examples += len(out)
    return out


def _cut(prompt: list[int], answer: list[int], cutoff_len: int) -> tuple[list[int], list[int]]:
    ns, nt = split_budget(len(prompt), len(answer), cutoff_len)
    ids = prompt[:ns] + answer[:nt]
    return ids, [IGNORE_INDEX] * ns + answer[:nt]


def build_feedback_examples(
    convs: list[Conversation],
    tokenizer: Any,
    template: ChatTemplate,
    *,
    cutoff_len: int,
    stats: PrepStats,
    first_id: int = 0,
) -> list[FeedbackExample]:
    """KTO examples; record i's KL answer is record i-1's (the first takes the last's)."""
    out: list[FeedbackExample] = []
    answers = [c.messages[-1] for c in convs]
    for i, conv in enumerate(convs):
        assert conv.kto_tag is not None
        prompt, answer, _ = prompt_and_answer(
            conv.messages, conv.system, conv.tools, tokenizer, template
        )
        kl_prompt, kl_answer, _ = prompt_and_answer(
            [*conv.messages[:-1], answers[i - 1]], conv.system, conv.tools, tokenizer, template
        )
        ids, labels = _cut(prompt, answer, cutoff_len)
        kl_ids, kl_labels = _cut(kl_prompt, kl_answer, cutoff_len)
        stats.truncated += int(len(ids) < len(prompt) + len(answer))
        if all(lab == IGNORE_INDEX for lab in labels):
            stats.dropped += 1
            continue
        out.append(FeedbackExample(ids, labels, kl_ids, kl_labels, conv.kto_tag, [first_id + i]))
        stats.tokens += len(ids)
        stats.label_tokens += sum(1 for lab in labels if lab != IGNORE_INDEX)
        stats.desirable += int(conv.kto_tag)
        stats.undesirable += int(not conv.kto_tag)
    stats.examples += len(out)
    return out


# ---- batching ----------------------------------------------------------------------------


def _pad(rows: list[list[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and the attention mask."""
    longest = max(len(r) for r in rows)
    ids = torch.full((len(rows), longest), value, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def _sample_ids(features: list[dict[str, Any]]) -> torch.Tensor:
    n = max(len(f["sample_ids"]) for f in features)
    sids = torch.full((len(features), n), -1, dtype=torch.long)
    for r, f in enumerate(features):
        sids[r, : len(f["sample_ids"])] = torch.tensor(f["sample_ids"], dtype=torch.long)
    return sids


@dataclass
class PairCollator:
    """B pairs -> 2B rows, the chosen answers first (one forward pass for both halves)."""

    pad_token_id: int

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids = [f["chosen_input_ids"] for f in features] + [
            f["rejected_input_ids"] for f in features
        ]
        labels = [f["chosen_labels"] for f in features] + [f["rejected_labels"] for f in features]
        input_ids, mask = _pad(ids, self.pad_token_id)
        padded_labels, _ = _pad(labels, IGNORE_INDEX)
        return {
            "input_ids": input_ids,
            "attention_mask": mask,
            "labels": padded_labels,
            "sample_ids": _sample_ids(features),
        }


@dataclass
class FeedbackCollator:
    """KTO batches: the answers, their KL counterparts and the desirable/undesirable tags."""

    pad_token_id: int

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        input_ids, mask = _pad([f["input_ids"] for f in features], self.pad_token_id)
        labels, _ = _pad([f["labels"] for f in features], IGNORE_INDEX)
        kl_ids, kl_mask = _pad([f["kl_input_ids"] for f in features], self.pad_token_id)
        kl_labels, _ = _pad([f["kl_labels"] for f in features], IGNORE_INDEX)
        return {
            "input_ids": input_ids,
            "attention_mask": mask,
            "labels": labels,
            "kl_input_ids": kl_ids,
            "kl_attention_mask": kl_mask,
            "kl_labels": kl_labels,
            "kto_tags": torch.tensor([bool(f["kto_tag"]) for f in features], dtype=torch.bool),
            "sample_ids": _sample_ids(features),
        }
