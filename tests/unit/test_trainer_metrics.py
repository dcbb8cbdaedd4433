"""BLEU-4 / ROUGE as LLaMA-Factory computes them, against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from services.trainer.metrics import aggregate, similarity


def test_identical_answers_score_100() -> None:
    s = similarity("The LO-200 Path Light costs 49 EUR.", "The LO-200 Path Light costs 49 EUR.")
    assert s == {"rouge-1": 100.0, "rouge-2": 100.0, "rouge-l": 100.0, "bleu-4": 100.0}


def test_english_known_values() -> None:
    s = similarity("the cat sat on the mat", "the cat is on the mat")
    # rouge-chinese (like pltrdy/rouge) counts n-gram *sets*: 4 of 5 unigrams, 3 of 5
    # bigrams; ROUGE-L: LCS "the cat on the mat" = 5 of 6 tokens on both sides.
    assert s["rouge-1"] == 80.0
    assert s["rouge-2"] == 60.0
    assert s["rouge-l"] == pytest.approx(83.3333, abs=1e-4)


def test_chinese_is_segmented_with_jieba_and_bleu_is_per_character() -> None:
    s = similarity("我喜欢北京", "我喜欢上海")
    # jieba: 我 / 喜欢 / 北京 vs 我 / 喜欢 / 上海 -> 2 of 3 words, 1 of 2 bigrams
    assert s["rouge-1"] == pytest.approx(66.6667, abs=1e-4)
    assert s["rouge-2"] == 50.0
    assert s["rouge-l"] == pytest.approx(66.6667, abs=1e-4)
    # characters: 1-gram 3/5, 2-gram 2/4, 3-gram 1/3, 4-gram 0/2 -> NIST smoothing 1/(2*2)
    expected = (3 / 5 * 2 / 4 * 1 / 3 * 1 / 4) ** 0.25 * 100
    assert s["bleu-4"] == pytest.approx(round(expected, 4), abs=1e-4)


def test_brevity_penalty_applies_to_short_predictions() -> None:
    s = similarity("abcd", "abcdefgh")  # every n-gram matches, half the length
    assert s["bleu-4"] == pytest.approx(round(math.exp(1 - 8 / 4) * 100, 4), abs=1e-4)


def test_empty_prediction_scores_zero_and_aggregate_is_the_mean() -> None:
    assert similarity("", "something") == {
        "rouge-1": 0.0,
        "rouge-2": 0.0,
        "rouge-l": 0.0,
        "bleu-4": 0.0,
    }
    agg = aggregate(
        [
            {"rouge-1": 100.0, "rouge-2": 50.0, "rouge-l": 100.0, "bleu-4": 10.0},
            {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 50.0, "bleu-4": 20.0},
        ]
    )
    assert agg == {"bleu-4": 15.0, "rouge-1": 50.0, "rouge-2": 25.0, "rouge-l": 75.0}
