"""Write the Lumen preference set: a grounded, cited answer preferred over an invented one.

For every numeric fact of samples/llm_sft/build_dataset.py (prices, counts, days, ...) the
paragraph of samples/corpus that states it becomes passage [1] or [2] of a RAG context,
next to a paragraph from another document. The rows look like what a RAG evaluation
records when the model invents a number and cites nothing: question, context, answer (the
fact with every free-standing number changed, uncited), reference (the fact) and
citation (the passage that states it). `tunestack llm prefs --from-eval` then turns them
into LLaMA-Factory preference data with the RAG API's exact prompt, as it would a real
evaluation's failures. Facts are split by fact, not by question: every 3rd fact is held
out (`lumen_prefs_heldout`), so held-out reward accuracy measures preferring the passage
over invention on facts never trained on.

Run from the repository root:  .venv/bin/python samples/llm_prefs/build_prefs.py
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "samples" / "llm_sft")]

from build_dataset import FACTS_EN  # noqa: E402  (a sibling script, not a package)

from services.common.documents.loaders import load  # noqa: E402
from services.trainer.prefs_from_eval import build_prefs, words  # noqa: E402

CORPUS = ROOT / "samples" / "corpus"
FILES = (
    "company_overview.md",
    "product_catalog.md",
    "product_faq.md",
    "troubleshooting.md",
    "support.html",
    "shipping_returns.html",
    "oncall_rotation.txt",
    "leave_policy.txt",
    "expense_policy.md",
    "security_policy.md",
    "app_release_process.md",
)
# A number standing alone (not part of a model code such as LO-200 or LO-B1).
NUMBER = re.compile(r"(?<![\w.-])\d+(?:\.\d+)?(?![\w-])")


def paragraphs() -> list[tuple[str, str]]:
    """(file name, paragraph) for every paragraph of 10+ words in the English corpus."""
    out = []
    for name in FILES:
        for section in load(CORPUS / name, max_bytes=2**24):
            for para in re.split(r"\n\s*\n", section.text):
                para = " ".join(para.split())
                if len(words(para)) >= 10:
                    out.append((name, para))
    return out


def grounding(answer: str, paras: list[tuple[str, str]]) -> int | None:
    """The paragraph that states every number of the answer and shares most of its words."""
    nums = NUMBER.findall(answer)
    want = set(words(answer))
    best, best_score = None, 0
    for i, (_, text) in enumerate(paras):
        if not all(re.search(rf"(?<![\d.]){re.escape(n)}(?![\d])", text) for n in nums):
            continue
        score = len(want & set(words(text)))
        if score > best_score:
            best, best_score = i, score
    return best


def invent(answer: str, rng: random.Random) -> str:
    """The answer with every free-standing number changed: confidently wrong."""

    def other(m: re.Match[str]) -> str:
        s = m.group()
        if "." in s:
            return f"{float(s) * 2:.1f}"
        n = int(s)
        return str(n + rng.choice((1, 2, 3, 5, 10) if n < 1000 else (1, 2, 3)))

    return NUMBER.sub(other, answer)


def rows(rng: random.Random) -> tuple[list[dict[str, object]], list[dict[str, object]], int]:
    paras = paragraphs()
    train: list[dict[str, object]] = []
    heldout: list[dict[str, object]] = []
    skipped = 0
    numeric = [f for f in FACTS_EN if NUMBER.search(f[1])]
    for k, (questions, answer, held_questions) in enumerate(numeric):
        where = grounding(answer, paras)
        if where is None:
            skipped += 1
            continue
        name, text = paras[where]
        others = [p for p in paras if p[0] != name]
        distractor = rng.choice(others)
        context = [
            {"text": text, "file_name": name},
            {"text": distractor[1], "file_name": distractor[0]},
        ]
        if rng.random() < 0.5:
            context.reverse()
        citation = 1 + [c["text"] for c in context].index(text)
        qs = (questions + held_questions)[:1] if k % 3 == 2 else questions
        for q in qs:
            row = {
                "question": q,
                "context": context,
                "answer": invent(answer, rng),
                "reference": answer,
                "citation": citation,
            }
            (heldout if k % 3 == 2 else train).append(row)
    return train, heldout, skipped


def main() -> None:
    train, heldout, skipped = rows(random.Random(7))
    for name, data in (("lumen_prefs", train), ("lumen_prefs_heldout", heldout)):
        report = HERE / f"eval_{name}.jsonl"
        report.write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in data), encoding="utf-8"
        )
        res = build_prefs(report, HERE, name)
        print(f"{name}: {res.pairs} pairs from {report.name}")
    print(f"{skipped} numeric facts without a paragraph stating all their numbers were left out")


if __name__ == "__main__":
    main()
