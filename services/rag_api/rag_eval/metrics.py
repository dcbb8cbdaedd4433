"""Answer, citation, faithfulness and abstention metrics, as the benchmarks define them.

- English: SQuAD v1.1's official `normalize_answer` (lower case, punctuation and the
  articles a/an/the removed, whitespace collapsed), exact match and bag-of-tokens F1,
  maximum over the reference answers.
- Chinese: CMRC 2018's official evaluation (`cmrc2018_evaluate.py`): `mixed_segmentation`
  (every CJK character a token, runs of other text split by NLTK's word tokenizer, its
  punctuation list removed), F1 from the longest common *substring* of the two token
  lists, EM after `remove_punctuation`. One deviation: NLTK's `word_tokenize` first splits
  sentences with the punkt model, which is data NLTK downloads; here the runs go straight
  to the word tokenizer it applies per sentence (NLTKWordTokenizer), which only differs for
  a run holding several sentences.
- ROUGE-L: F-measure (beta 1) of the longest common subsequence of tokens, as the
  `rouge-score` package computes it (English tokens: lower case, non-alphanumerics as
  spaces; Chinese: the CMRC segmentation, since rouge-score drops CJK characters).

The language is picked by script: CJK characters in a reference answer (or, without one,
in the question) select the Chinese metrics. Citation markers `[n]` are removed from an
answer before any of these are computed (they are provenance, not words of the answer).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any

from services.rag_api.rag_eval.records import Lang

_CJK = re.compile(r"[\u4e00-\u9fa5]")  # CMRC 2018's own test for a Chinese character
_MARKER = re.compile(r"\s*\[\d{1,2}\]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)
# cmrc2018_evaluate.py's sp_char, verbatim ("……" is two characters and so never matches one)
CMRC_PUNCT = (
    "-", ":", "_", "*", "^", "/", "\\", "~", "`", "+", "=",
    "，", "。", "：", "？", "！", "“", "”", "；", "’", "《", "》", "……", "·", "、",
    "「", "」", "（", "）", "－", "～", "『", "』",
)  # fmt: skip
_ROUGE_NON_ALNUM = re.compile(r"[^a-z0-9]+")

# How a small model says it does not know; the prompt (prompts.SYSTEM) asks it to say so.
_ABSTAIN = re.compile(
    r"(do(?:es)? not know|don'?t know|not (?:in|found in|mentioned in|covered by|provided in|"
    r"given in|contained in|stated in) (?:the |these |any )?(?:passages?|documents?|context|"
    r"text|sources?)|(?:passages?|documents?|context|text) (?:does|do) not (?:contain|"
    r"mention|say|provide|include|specify)|no information|not enough information|"
    r"cannot (?:find|answer|be answered|determine)|can'?t (?:find|answer|determine)|"
    r"unable to (?:find|answer|determine)|is not (?:mentioned|stated|specified|provided)|"
    r"不知道|没有提到|未提及|没有相关|无法回答|无法确定|无法找到|找不到|没有提供|未提供|"
    r"文档中没有|段落中没有|资料中没有)",
    re.IGNORECASE,
)


def lang_of(answers: Sequence[str], question: str) -> Lang:
    text = "".join(answers) if any(a.strip() for a in answers) else question
    return "zh" if _CJK.search(text) else "en"


def strip_citations(text: str) -> str:
    return _MARKER.sub("", text).strip()


# ---- SQuAD v1.1 ----------------------------------------------------------------------------


def squad_normalize(s: str) -> str:
    """SQuAD v1.1's normalize_answer."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def squad_em(prediction: str, answer: str) -> float:
    return float(squad_normalize(prediction) == squad_normalize(answer))


def squad_f1(prediction: str, answer: str) -> float:
    pred = squad_normalize(prediction).split()
    gold = squad_normalize(answer).split()
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    p, r = same / len(pred), same / len(gold)
    return 2 * p * r / (p + r)


# ---- CMRC 2018 -----------------------------------------------------------------------------


@cache
def _word_tokenizer() -> Any:
    # optional library: NLTK comes with llama-index-core (the rag extra); the fallback is
    # a regex with the same splits for the short Latin runs inside Chinese answers
    try:
        from nltk.tokenize import NLTKWordTokenizer

        return NLTKWordTokenizer().tokenize
    except ImportError:  # pragma: no cover - nltk is installed with the rag extra
        return re.compile(r"\w+(?:[.,']\w+)*|[^\w\s]").findall


def mixed_segmentation(text: str, rm_punc: bool = False) -> list[str]:
    """cmrc2018_evaluate.py's mixed_segmentation."""
    tokenize = _word_tokenizer()
    out: list[str] = []
    run = ""
    for ch in str(text).lower().strip():
        if rm_punc and ch in CMRC_PUNCT:
            continue
        if _CJK.match(ch) or ch in CMRC_PUNCT:
            if run:
                out.extend(tokenize(run))
                run = ""
            out.append(ch)
        else:
            run += ch
    if run:
        out.extend(tokenize(run))
    return out


def longest_common_substring(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common contiguous run (cmrc2018_evaluate.py's find_lcs)."""
    best = 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b):
            if x == y:
                cur[j + 1] = prev[j] + 1
                best = max(best, cur[j + 1])
        prev = cur
    return best


def cmrc_remove_punctuation(s: str) -> str:
    return "".join(ch for ch in str(s).lower().strip() if ch not in CMRC_PUNCT)


def cmrc_f1(prediction: str, answer: str) -> float:
    gold = mixed_segmentation(answer, rm_punc=True)
    pred = mixed_segmentation(prediction, rm_punc=True)
    n = longest_common_substring(gold, pred)
    if n == 0:
        return 0.0
    p, r = n / len(pred), n / len(gold)
    return 2 * p * r / (p + r)


def cmrc_em(prediction: str, answer: str) -> float:
    return float(cmrc_remove_punctuation(prediction) == cmrc_remove_punctuation(answer))


# ---- ROUGE-L -------------------------------------------------------------------------------


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Longest common subsequence (not necessarily contiguous)."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_tokens(text: str, lang: Lang) -> list[str]:
    if lang == "zh":
        return mixed_segmentation(text, rm_punc=True)
    return _ROUGE_NON_ALNUM.sub(" ", text.lower()).split()


def rouge_l(prediction: str, answer: str, lang: Lang = "en") -> float:
    pred, gold = rouge_tokens(prediction, lang), rouge_tokens(answer, lang)
    n = lcs_length(gold, pred)
    if n == 0:
        return 0.0
    p, r = n / len(pred), n / len(gold)
    return 2 * p * r / (p + r)


# ---- one answer against its references ------------------------------------------------------


def answer_scores(prediction: str, answers: Sequence[str], lang: Lang) -> dict[str, float]:
    """EM, F1 and ROUGE-L, each the maximum over the reference answers."""
    text = strip_citations(prediction)
    if lang == "zh":
        em, f1 = cmrc_em, cmrc_f1
    else:
        em, f1 = squad_em, squad_f1
    return {
        "em": max(em(text, a) for a in answers),
        "f1": max(f1(text, a) for a in answers),
        "rouge_l": max(rouge_l(text, a, lang) for a in answers),
    }


def abstained(answer: str) -> bool:
    """The answer says the documents do not hold the answer (instead of inventing one)."""
    return bool(_ABSTAIN.search(answer))


# ---- citations and faithfulness ---------------------------------------------------------------


def content_tokens(text: str, lang: Lang) -> list[str]:
    """Tokens a claim is made of: SQuAD-normalized words, or CMRC segments for Chinese."""
    if lang == "zh":
        return mixed_segmentation(text, rm_punc=True)
    return squad_normalize(text).split()


def faithfulness(answer: str, cited_texts: Iterable[str], lang: Lang) -> float:
    """Share of the answer's tokens found in the chunks it cites (0 when it cites none)."""
    tokens = content_tokens(strip_citations(answer), lang)
    if not tokens:
        return 0.0
    support: set[str] = set()
    for t in cited_texts:
        support.update(content_tokens(t, lang))
    return sum(t in support for t in tokens) / len(tokens)


def citation_scores(
    cited: Sequence[int], gold_ranks: set[int]
) -> tuple[float | None, float | None]:
    """(precision, recall) of the cited passage numbers against the answer-bearing ones
    among the retrieved (1-based). Precision: share of cited chunks that hold the answer
    (None when nothing is cited); recall: 1 when an answer-bearing chunk that was retrieved
    is cited (None when none was retrieved)."""
    precision = sum(c in gold_ranks for c in cited) / len(cited) if cited else None
    recall = float(any(c in gold_ranks for c in cited)) if gold_ranks else None
    return precision, recall


# ---- aggregates -----------------------------------------------------------------------------


def mean(values: Iterable[float | None]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile with linear interpolation between ranks (numpy's default)."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)
