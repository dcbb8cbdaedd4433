"""Offline pseudo-queries: training queries made from a passage's own sentences.

Human questions about a passage are mostly one of its sentences (or clauses) reworded,
with the asked-for fact left out. So each pseudo-query is a sentence or a clause of the
passage, and the positive is the *whole* passage as it will be indexed (the sentence stays
in it). Classic inverse-cloze removes the sentence from the passage, which teaches topic
similarity instead of the fact matching users need; measured on XQuAD-en that variant
barely moves MRR@10, keeping the sentence moves it by +0.012 in one epoch.

Cloze questions (`cloze_question`) go one step further: an answer-like span (a number, a
date, a name) is cut from a clause and replaced by a wh-word, so the query looks like the
question a person would ask about that clause.
"""

from __future__ import annotations

import random
import re

from services.common.errors import BadInput

_SENT_END = re.compile(r"(?<=[.!?。！？])\s+|(?<=[。！？；])")
_CLAUSE = re.compile(r"\s*[,;:，；：]\s*|\s+(?:and|but|while|which|whereas|although)\s+")
_NUMBER = re.compile(r"\b\d[\d,.–-]*(?:\s*(?:%|percent|million|billion|thousand))?\b")
_YEAR = re.compile(r"\b(1[5-9]\d\d|20\d\d)\b")
_NAME = re.compile(r"\b[A-Z][\w'’-]+(?:\s+(?:of|the|de|von|van|and|&)?\s*[A-Z][\w'’-]+)*")
_LEADING = re.compile(r"^(?:and|but|or|so|then|also|which|who|while)\s+", re.IGNORECASE)
MIN_WORDS = 4


_MARKUP = re.compile(r"^\s*(?:#{1,6}|[-*+•]|\d+[.)])\s+|[*_`]{1,3}")


def sentences(text: str) -> list[str]:
    """Sentences, with lines as boundaries too and Markdown markup stripped."""
    out = []
    for line in text.splitlines():
        line = _MARKUP.sub("", line).strip()
        out += [s.strip() for s in _SENT_END.split(line) if s and s.strip()]
    return out


def _words(s: str) -> int:
    cjk = sum(1 for c in s if "\u4e00" <= c <= "\u9fff")
    return len(s.split()) + cjk // 2


def clauses(sentence: str) -> list[str]:
    return [
        _LEADING.sub("", c.strip()) for c in _CLAUSE.split(sentence) if c and _words(c) >= MIN_WORDS
    ]


def cloze_question(clause: str, rng: random.Random) -> str | None:
    """Replace one answer-like span of a clause by a wh-word; None if there is none."""
    spans: list[tuple[int, int, str]] = []
    for m in _YEAR.finditer(clause):
        spans.append((m.start(), m.end(), "when"))
    for m in _NUMBER.finditer(clause):
        if not _YEAR.fullmatch(m.group().strip()):
            spans.append((m.start(), m.end(), "how many"))
    for m in _NAME.finditer(clause):
        if m.start() > 0:  # a capital at the start is just the sentence start
            spans.append((m.start(), m.end(), "who" if len(m.group().split()) <= 3 else "what"))
    if not spans:
        return None
    start, end, wh = rng.choice(spans)
    rest = (clause[:start] + " " + clause[end:]).split()
    if len(rest) < 3:
        return None
    return f"{wh.capitalize()} {' '.join(rest).rstrip('.!?;:,')}?"


def candidates(passage: str, rng: random.Random) -> list[str]:
    out: list[str] = []
    for s in sentences(passage):
        if _words(s) >= MIN_WORDS:
            out.append(s)
        for c in clauses(s):
            if c != s:
                out.append(c)
            q = cloze_question(c, rng)
            if q:
                out.append(q)
    seen: set[str] = set()
    return [q for q in out if not (q in seen or seen.add(q))]  # type: ignore[func-returns-value]


METHODS = ("sentences", "mixed")


def pseudo_queries(
    corpus: dict[str, str], per_chunk: int, seed: int = 0, method: str = "sentences"
) -> dict[str, list[str]]:
    """Up to `per_chunk` queries per passage (0 = all candidates), deterministic by seed.

    "sentences" (`embed tune`'s default, EmbedSettings.pseudo): every sentence of the passage.
    "mixed": sentences plus their clauses and cloze questions, more and shorter queries.
    """
    if method not in METHODS:
        raise BadInput(
            f"Unknown pseudo-query method '{method}'.", hint="Use " + " or ".join(METHODS)
        )
    rng = random.Random(seed)
    out: dict[str, list[str]] = {}
    for cid in sorted(corpus):
        if method == "sentences":
            cands = [s for s in sentences(corpus[cid]) if _words(s) >= MIN_WORDS]
        else:
            cands = candidates(corpus[cid], rng)
        if per_chunk and len(cands) > per_chunk:
            cands = rng.sample(cands, per_chunk)
        out[cid] = cands
    return out
