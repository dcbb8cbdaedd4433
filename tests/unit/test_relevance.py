"""The relevance gate's decision and its threshold's quantile (the stack-backed behaviour:
tests/integration/test_relevance_gate.py)."""

from __future__ import annotations

import pytest

from services.common.errors import BadInput
from services.common.rag_prompt import ABSTENTION, ABSTENTION_ZH, abstention_for
from services.rag_api.answering import gate_closed
from services.rag_api.rag_eval.metrics import abstained
from services.rag_api.relevance import quantile
from services.rag_api.retrieval import RetrievalResult


def result(best: float | None, threshold: float | None) -> RetrievalResult:
    return RetrievalResult("c", "e", "dense", [], 1.0, best, threshold)


def test_gate_follows_the_build_unless_the_request_says_otherwise() -> None:
    assert gate_closed(result(0.3, 0.4), None)
    assert not gate_closed(result(0.4, 0.4), None)  # as similar as the threshold: answered
    assert not gate_closed(result(0.3, None), None)  # not calibrated: off
    assert not gate_closed(result(0.3, 0.4), 0.0)  # the request turns it off
    assert gate_closed(result(0.5, None), 0.6)  # or sets its own
    assert not gate_closed(result(None, 0.4), None)  # bm25: no similarity to judge
    with pytest.raises(BadInput):
        gate_closed(result(0.5, 0.4), 1.5)


def test_quantile_turns_away_at_most_that_share() -> None:
    values = [i / 100 for i in range(100)]  # 0.00 .. 0.99
    t = quantile(values, 0.05)
    assert t == 0.05 and sum(v < t for v in values) == 5
    assert quantile([0.7] * 30, 0.05) == 0.7  # ties: nothing is below
    assert quantile([0.2, 0.9], 0.05) == 0.2


def test_abstention_sentence_in_the_question_language_is_read_as_abstaining() -> None:
    assert abstention_for("Who won?") == ABSTENTION
    assert abstention_for("谁赢了？") == ABSTENTION_ZH
    assert abstained(ABSTENTION) and abstained(ABSTENTION_ZH)
