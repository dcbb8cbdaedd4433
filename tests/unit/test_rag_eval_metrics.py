"""RAG evaluation metrics against the official definitions, on hand-computed examples."""

from __future__ import annotations

import pytest

from services.rag_api.rag_eval import metrics as m

# ---- SQuAD v1.1 (evaluate-v1.1.py) -----------------------------------------------------------


def test_squad_normalization_removes_case_punctuation_articles_and_spaces() -> None:
    assert m.squad_normalize("The  Cat, sat!") == "cat sat"
    assert m.squad_normalize("An apple a day") == "apple day"
    # punctuation goes before articles: "the-end" -> "theend" keeps its word
    assert m.squad_normalize("the-end of The Line.") == "theend of line"
    # articles only as whole words
    assert m.squad_normalize("Theatre and anthem") == "theatre and anthem"


def test_squad_exact_match_and_f1_by_hand() -> None:
    assert m.squad_em("The Denver Broncos!", "denver broncos") == 1.0
    assert m.squad_em("Denver", "Denver Broncos") == 0.0
    # "cat sat on mat" vs "cat on mat": 3 shared, P = 3/4, R = 3/3 -> F1 = 6/7
    assert m.squad_f1("the cat sat on the mat", "a cat on a mat") == pytest.approx(6 / 7)
    # tokens are a bag: "x x y" vs "x y y" share min(2,1) x + min(1,2) y = 2 tokens,
    # P = 2/3, R = 2/3 -> F1 = 2/3
    assert m.squad_f1("x x y", "x y y") == pytest.approx(2 / 3)
    assert m.squad_f1("nothing shared", "entirely different") == 0.0


def test_answer_scores_take_the_best_reference_and_ignore_citation_markers() -> None:
    s = m.answer_scores("Denver Broncos [1][2]", ["Broncos", "Denver Broncos"], "en")
    assert s == {"em": 1.0, "f1": 1.0, "rouge_l": 1.0}


# ---- CMRC 2018 (cmrc2018_evaluate.py) ---------------------------------------------------------


def test_cmrc_mixed_segmentation_splits_chinese_characters_and_latin_words() -> None:
    assert m.mixed_segmentation("4分钟内", rm_punc=True) == ["4", "分", "钟", "内"]
    assert m.mixed_segmentation("Python 3.11版本，发布了", rm_punc=True) == [
        "python",
        "3.11",
        "版",
        "本",
        "发",
        "布",
        "了",
    ]
    # without rm_punc the CMRC punctuation list stays, each mark one token
    assert m.mixed_segmentation("是，的", rm_punc=False) == ["是", "，", "的"]


def test_cmrc_f1_uses_the_longest_common_substring_by_hand() -> None:
    # pred 4/分/钟/内 vs gold 4/分/钟: LCS 3, P = 3/4, R = 3/3 -> F1 = 6/7
    assert m.cmrc_f1("4分钟内", "4分钟") == pytest.approx(6 / 7)
    # 北京是首都 vs 北京首都: the longest *contiguous* run is 北京 (2), not 北京首都:
    # P = 2/5, R = 2/4 -> F1 = 2 * 0.4 * 0.5 / 0.9 = 4/9
    assert m.cmrc_f1("北京是首都", "北京首都") == pytest.approx(4 / 9)
    assert m.cmrc_f1("上海", "北京") == 0.0


def test_cmrc_exact_match_ignores_its_punctuation_only() -> None:
    assert m.cmrc_em("踢爆。", "踢爆") == 1.0
    assert m.cmrc_em("「踢爆」", "踢爆") == 1.0
    assert m.cmrc_em("踢爆了", "踢爆") == 0.0


def test_language_is_picked_by_script() -> None:
    assert m.lang_of(["踢爆"], "What?") == "zh"
    assert m.lang_of(["Denver"], "哪个队？") == "en"  # the answer decides
    assert m.lang_of([], "生命数耗完即算为什么？") == "zh"  # no answer: the question
    s = m.answer_scores("北京是首都", ["北京首都"], m.lang_of(["北京首都"], ""))
    assert s["f1"] == pytest.approx(4 / 9) and s["em"] == 0.0


# ---- ROUGE-L -----------------------------------------------------------------------------------


def test_rouge_l_is_the_lcs_f_measure_by_hand() -> None:
    # Lin (2004)'s example: reference "police killed the gunman"
    # "police kill the gunman": LCS police-the-gunman = 3 -> P = R = 3/4
    assert m.rouge_l("police kill the gunman", "police killed the gunman") == pytest.approx(0.75)
    # "the gunman kill police": LCS the-gunman = 2 -> P = R = 2/4
    assert m.rouge_l("the gunman kill police", "police killed the gunman") == pytest.approx(0.5)
    # a subsequence, unlike CMRC's substring: 北京首都 inside 北京是首都 is 4 long
    # P = 4/5, R = 4/4 -> F = 8/9
    assert m.rouge_l("北京是首都", "北京首都", "zh") == pytest.approx(8 / 9)
    assert m.lcs_length(list("abcbdab"), list("bdcaba")) == 4  # the textbook pair


# ---- abstention, citations, faithfulness, aggregates -------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "I do not know.",
        "I don't know the answer.",
        "The passages do not contain the answer.",
        "This is not mentioned in the documents.",
        "文档中没有提到这个信息。",
        "我不知道。",
    ],
)
def test_abstentions_are_recognized(text: str) -> None:
    assert m.abstained(text)


@pytest.mark.parametrize("text", ["Paris [1]", "The warranty lasts two years.", "49 EUR [2]"])
def test_answers_are_not_abstentions(text: str) -> None:
    assert not m.abstained(text)


def test_citation_precision_and_recall() -> None:
    # cited 1 and 3; answer-bearing among the retrieved: 3 -> P 1/2, R 1
    assert m.citation_scores([1, 3], {3}) == (0.5, 1.0)
    assert m.citation_scores([2], {3}) == (0.0, 0.0)
    assert m.citation_scores([], {3}) == (None, 0.0)  # nothing cited: no precision
    assert m.citation_scores([1], set()) == (0.0, None)  # nothing to recall


def test_faithfulness_is_the_share_of_answer_tokens_in_the_cited_chunks() -> None:
    chunk = "The warranty lasts two years from delivery."
    # answer tokens (articles/punctuation out): warranty lasts three years -> 3 of 4 found
    assert m.faithfulness("The warranty lasts three years [1]", [chunk], "en") == 0.75
    assert m.faithfulness("The warranty lasts two years", [], "en") == 0.0
    assert m.faithfulness("保修两年", ["本产品保修两年。"], "zh") == 1.0


def test_percentiles_interpolate_like_numpy() -> None:
    assert m.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert m.percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)
    assert m.percentile([], 50) is None
    assert m.mean([None, 1.0, 0.0]) == 0.5 and m.mean([None]) is None
