from __future__ import annotations

import itertools

import pytest

from services.common.documents.chunking import Chunker, split_sentences


def char_tokens(text: str) -> list[int]:
    """One token per non-space character: makes sizes easy to reason about."""
    return [ord(c) for c in text if not c.isspace()]


def test_chinese_and_english_sentence_ends() -> None:
    text = "你好。今天天气很好！是吗？“对。”He said hi. Then left!\nNext line."
    assert split_sentences(text) == [
        "你好。",
        "今天天气很好！",
        "是吗？",
        "“对。”",
        "He said hi. ",
        "Then left!\n",
        "Next line.",
    ]


def test_decimal_points_do_not_split() -> None:
    assert split_sentences("Version 3.5 costs 49.90 EUR. Next.") == [
        "Version 3.5 costs 49.90 EUR. ",
        "Next.",
    ]


def test_chunks_respect_size_and_keep_every_sentence() -> None:
    sentences = [f"第{i}句话说明了一个事实。" for i in range(40)]
    text = "".join(sentences)
    chunks = Chunker(40, 10, char_tokens).split(text)
    assert len(chunks) > 1
    assert all(len(char_tokens(c)) <= 40 for c in chunks)
    joined = "".join(chunks)
    assert all(s in joined for s in sentences)
    # chunks end at sentence ends, not mid-sentence
    assert all(c.endswith("。") for c in chunks)


def test_overlap_repeats_context() -> None:
    text = " ".join(f"Sentence number {i} is here." for i in range(30))
    chunks = Chunker(60, 25, char_tokens).split(text)
    assert len(chunks) > 5
    for a, b in itertools.pairwise(chunks):
        last_sentence = a.split(". ")[-1]
        assert b.startswith(last_sentence.rstrip(".")), (a, b)


def test_invalid_sizes() -> None:
    with pytest.raises(ValueError):
        Chunker(8, 0, char_tokens)
    with pytest.raises(ValueError):
        Chunker(64, 64, char_tokens)
