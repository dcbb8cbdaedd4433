"""BLEU-4 and ROUGE-1/2/L exactly as LLaMA-Factory computes them for `do_predict`.

Users compare our numbers with the ones LLaMA-Factory printed for them, so the recipe is
theirs, quirks included: ROUGE (rouge-chinese) runs on jieba words joined by spaces
(jieba splits Chinese into words and leaves English words whole), BLEU-4 (nltk,
smoothing method 3) runs on characters, every score is an F-measure x 100 rounded to 4
places, and the reported value is the mean over samples.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

KEYS = ("bleu-4", "rouge-1", "rouge-2", "rouge-l")
_ready = False


def _init() -> None:
    global _ready
    if not _ready:
        import jieba

        jieba.setLogLevel(logging.CRITICAL)
        jieba.initialize()
        _ready = True


def similarity(pred: str, label: str) -> dict[str, float]:
    """Scores for one prediction against its reference, in LLaMA-Factory's units (0-100)."""
    import jieba
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge_chinese import Rouge

    _init()
    hyp = " ".join(jieba.cut(pred))
    ref = " ".join(jieba.cut(label))
    if not hyp.split() or not ref.split():
        rouge: dict[str, Any] = {k: {"f": 0.0} for k in ("rouge-1", "rouge-2", "rouge-l")}
    else:
        try:
            rouge = Rouge().get_scores(hyp, ref)[0]
        except RecursionError:  # rouge-chinese's LCS recursion on very long texts
            rouge = Rouge().get_scores(" ".join(hyp.split()[:800]), " ".join(ref.split()[:800]))[0]
    with warnings.catch_warnings():  # nltk warns on empty or very short hypotheses
        warnings.simplefilter("ignore")
        bleu = sentence_bleu(
            [list(label)], list(pred), smoothing_function=SmoothingFunction().method3
        )
    out = {k: round(float(v["f"]) * 100, 4) for k, v in rouge.items()}
    out["bleu-4"] = round(float(bleu) * 100, 4)
    return out


def aggregate(scores: list[dict[str, float]]) -> dict[str, float]:
    if not scores:
        return dict.fromkeys(KEYS, 0.0)
    return {k: round(sum(s[k] for s in scores) / len(scores), 4) for k in KEYS}
