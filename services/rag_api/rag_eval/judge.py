"""The optional LLM judge: a model on a configured server grades each answer for
correctness (against the reference answers) and groundedness (against the chunks it cites).

Off by default; its name is in the report. Grades are 0-10 in the reply, stored as 0-1; a
reply without a readable grade leaves that score empty (counted, never guessed). A judge is
only as good as its model: the bundled 135M model is no judge, it only proves the wiring.
"""

from __future__ import annotations

import re

SYSTEM = (
    "You grade answers to questions. Reply with exactly two lines and nothing else:\n"
    "correctness: N\ngroundedness: N\n"
    "where N is an integer from 0 to 10. correctness: does the answer say what the "
    "reference answer says (10 = same meaning, 0 = wrong or missing; if there is no "
    "reference and the passages do not answer the question, saying so is correct). "
    "groundedness: is every claim of the answer supported by the passages (10 = all, "
    "0 = none)."
)
_GRADE = {
    "correctness": re.compile(r"correct\w*\W{0,3}(\d{1,2}(?:\.\d+)?)", re.IGNORECASE),
    "groundedness": re.compile(r"ground\w*\W{0,3}(\d{1,2}(?:\.\d+)?)", re.IGNORECASE),
}
MAX_PASSAGE_CHARS = 1500


def user_message(question: str, answers: list[str], answer: str, passages: list[str]) -> str:
    refs = " | ".join(answers) if answers else "(none: the documents may not answer it)"
    ctx = "\n\n".join(f"[{i}] {p[:MAX_PASSAGE_CHARS]}" for i, p in enumerate(passages, 1))
    return (
        f"Question: {question}\nReference answer: {refs}\n\n"
        f"Passages the answer cites:\n{ctx or '(none)'}\n\nAnswer to grade: {answer}"
    )


def parse_grades(reply: str) -> dict[str, float | None]:
    """{'judge_correctness': 0-1 | None, 'judge_groundedness': 0-1 | None}."""
    out: dict[str, float | None] = {}
    for name, pattern in _GRADE.items():
        m = pattern.search(reply)
        v = float(m.group(1)) if m else None
        out[f"judge_{name}"] = min(1.0, v / 10) if v is not None else None
    return out
