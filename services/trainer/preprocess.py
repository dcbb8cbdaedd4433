"""Conversations -> token ids and labels, with loss only on what the assistant writes.

Every assistant turn of a multi-turn record is trained (its reply and end-of-turn token);
system, user and tool text is masked with -100. Over-long samples are cut the way
LLaMA-Factory cuts them (prompt and response share the budget, later turns are dropped
first), and every cut or dropped sample is counted so the user can see it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import torch

from services.trainer.datasets import Conversation
from services.trainer.templates import IGNORE_INDEX, ChatTemplate


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    sample_ids: list[int]  # global index of the record(s) in this sequence

    def as_dict(self) -> dict[str, Any]:
        return {"input_ids": self.input_ids, "labels": self.labels, "sample_ids": self.sample_ids}


@dataclass
class PrepStats:
    """What preprocessing did to the data; shown before training and kept in meta.json."""

    records: int = 0
    empty: int = 0  # skipped at load: nothing to learn (empty prompt or response)
    truncated: int = 0  # cut to cutoff_len
    dropped: int = 0  # no response token left after cutting
    examples: int = 0
    tokens: int = 0
    label_tokens: int = 0
    per_dataset: dict[str, int] = field(default_factory=dict)
    desirable: int = 0  # stage kto: answers labelled good
    undesirable: int = 0  # stage kto: answers labelled bad

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def split_budget(source_len: int, target_len: int, cutoff_len: int) -> tuple[int, int]:
    """How many prompt and response tokens fit in `cutoff_len` (LLaMA-Factory's rule).

    A short response is kept whole and the prompt is cut; a short prompt is kept whole
    and the response cut; otherwise both shrink in proportion to their lengths.
    """
    if target_len * 2 < cutoff_len:
        max_target = cutoff_len
    elif source_len * 2 < cutoff_len:
        max_target = cutoff_len - source_len
    else:
        max_target = int(cutoff_len * (target_len / (source_len + target_len)))
    new_target = min(max_target, target_len)
    new_source = min(max(cutoff_len - new_target, 0), source_len)
    return new_source, new_target


def encode_sft(
    conv: Conversation,
    tokenizer: Any,
    template: ChatTemplate,
    cutoff_len: int,
    *,
    train_on_prompt: bool = False,
    mask_history: bool = False,
) -> tuple[list[int], list[int], bool]:
    """(input_ids, labels, truncated) for one conversation."""
    segments = template.turn_segments(tokenizer, conv.messages, conv.system, conv.tools)
    input_ids: list[int] = []
    labels: list[int] = []
    truncated = False
    last = len(segments) - 1
    for turn, (src_text, tgt_text) in enumerate(segments):
        src = tokenizer.encode(src_text, add_special_tokens=False)
        tgt = tokenizer.encode(tgt_text, add_special_tokens=False)
        left = cutoff_len - len(input_ids)
        if left <= 0:
            truncated = True
            break
        ns, nt = split_budget(len(src), len(tgt), left)
        if ns < len(src) or nt < len(tgt):
            truncated = True
        src, tgt = src[:ns], tgt[:nt]
        input_ids += src + tgt
        labels += src if train_on_prompt else [IGNORE_INDEX] * len(src)
        labels += [IGNORE_INDEX] * len(tgt) if (mask_history and turn != last) else tgt
    return input_ids, labels, truncated


def encode_pt(conv: Conversation, tokenizer: Any) -> list[int]:
    """Plain text plus the end-of-sequence token; every token is trained."""
    ids = tokenizer.encode(conv.messages[0].content, add_special_tokens=False)
    eos = tokenizer.eos_token_id
    return [*ids, eos] if eos is not None else ids


def build_examples(
    convs: list[Conversation],
    tokenizer: Any,
    template: ChatTemplate,
    *,
    stage: str,
    cutoff_len: int,
    packing: bool,
    train_on_prompt: bool = False,
    mask_history: bool = False,
    stats: PrepStats | None = None,
    first_id: int = 0,
) -> list[Example]:
    stats = stats or PrepStats()
    examples: list[Example] = []
    if stage == "pt":
        streams = [(first_id + i, encode_pt(c, tokenizer)) for i, c in enumerate(convs)]
        if packing:  # concatenate everything and cut into cutoff_len blocks
            flat = [(sid, t) for sid, ids in streams for t in ids]
            for s in range(0, len(flat), cutoff_len):
                block = flat[s : s + cutoff_len]
                ids = [t for _, t in block]
                sids = sorted({sid for sid, _ in block})
                examples.append(Example(ids, list(ids), sids))
        else:
            for sid, ids in streams:
                if len(ids) > cutoff_len:
                    stats.truncated += 1
                    ids = ids[:cutoff_len]
                examples.append(Example(ids, list(ids), [sid]))
    else:
        for i, conv in enumerate(convs):
            ids, labels, cut = encode_sft(
                conv,
                tokenizer,
                template,
                cutoff_len,
                train_on_prompt=train_on_prompt,
                mask_history=mask_history,
            )
            stats.truncated += int(cut)
            if not any(lab != IGNORE_INDEX for lab in labels):
                stats.dropped += 1
                continue
            examples.append(Example(ids, labels, [first_id + i]))
        if packing:
            examples = pack_examples(examples, cutoff_len)
    for ex in examples:
        stats.tokens += len(ex.input_ids)
        stats.label_tokens += sum(1 for lab in ex.labels if lab != IGNORE_INDEX)
    stats.examples += len(examples)
    return examples


def pack_examples(examples: list[Example], cutoff_len: int) -> list[Example]:
    """First-fit-decreasing bins of at most cutoff_len tokens (LLaMA-Factory's `packing`).

    Samples in one bin attend to each other (as in LLaMA-Factory without neat_packing);
    the gain is no padding at all, which is what dominates small-batch CPU training.
    """
    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i].input_ids), i))
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        n = len(examples[i].input_ids)
        for b, free in enumerate(room):
            if n <= free:
                bins[b].append(i)
                room[b] -= n
                break
        else:
            bins.append([i])
            room.append(cutoff_len - n)
    packed = []
    for members in bins:
        members.sort()
        packed.append(
            Example(
                [t for i in members for t in examples[i].input_ids],
                [t for i in members for t in examples[i].labels],
                [s for i in members for s in examples[i].sample_ids],
            )
        )
    return packed


class TrainingSample(Protocol):
    """What the datasets hold: SFT sequences, preference pairs or KTO answers."""

    sample_ids: list[int]

    def as_dict(self) -> dict[str, Any]: ...


SampleT = TypeVar("SampleT", bound=TrainingSample)


def split_validation(
    examples: list[SampleT], val_size: float, seed: int
) -> tuple[list[SampleT], list[SampleT]]:
    """A seeded random hold-out of val_size (fraction, or a count when >= 1)."""
    if val_size <= 0 or len(examples) < 2:
        return examples, []
    n_val = int(val_size) if val_size >= 1 else max(1, round(len(examples) * val_size))
    n_val = min(n_val, len(examples) - 1)
    idx = list(range(len(examples)))
    random.Random(seed).shuffle(idx)
    val = set(idx[:n_val])
    return [e for i, e in enumerate(examples) if i not in val], [examples[i] for i in sorted(val)]


class ExampleDataset(torch.utils.data.Dataset[dict[str, Any]]):
    """A plain list-backed dataset: the sampler, not the storage, decides the order."""

    def __init__(self, examples: Sequence[TrainingSample]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.examples[i].as_dict()


@dataclass
class PadCollator:
    """Right-pads a batch: pad id for inputs, -100 for labels, -1 for sample ids."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        longest = max(len(f["input_ids"]) for f in features)
        m = self.pad_to_multiple_of
        if m:
            longest = (longest + m - 1) // m * m
        n_ids = max(len(f["sample_ids"]) for f in features)
        ids = torch.full((len(features), longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), longest), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(features), longest), dtype=torch.long)
        sids = torch.full((len(features), n_ids), -1, dtype=torch.long)
        for r, f in enumerate(features):
            n = len(f["input_ids"])
            ids[r, :n] = torch.tensor(f["input_ids"], dtype=torch.long)
            labels[r, :n] = torch.tensor(f["labels"], dtype=torch.long)
            mask[r, :n] = 1
            sids[r, : len(f["sample_ids"])] = torch.tensor(f["sample_ids"], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels, "sample_ids": sids}
