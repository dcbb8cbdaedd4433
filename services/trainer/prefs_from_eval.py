"""Preference data learned from RAG evaluation failures (`tunestack llm prefs --from-eval`).

An evaluation run asks the served model questions whose reference answers are known.
Where the model answered wrongly, or without citing its passage, that row is a ready-made
preference: the reference answer with its citation is preferred over what the model
said, for the exact prompt it was given. The prompt is rebuilt with the RAG API's own
prompt (services/common/rag_prompt.py), so DPO trains on what is served.

Input: JSONL (or a JSON list) of rows with `question`, `context` (the passages: a list of
strings or of {text, file_name|source, page} objects, or the formatted context block),
`answer` (the model's answer), `reference` (the reference answer) and optionally
`citation` (the passage number(s) of the reference, e.g. 2, "[2]" or [1, 3]; else the
passage sharing most words with the reference), `correct` and `cited` (the evaluation's
own verdicts; else judged here: the answer holds every number of the reference and its
words, or token F1 >= 0.5, and cites the reference's passage) and `overcited` (beside the
right passage the answer also cites one that does not hold the reference; else judged
against `bearing`, the passages that do, by default `citation`). Rows that are correct,
cited and not over-cited teach nothing and are skipped.

`tunestack rag eval`'s questions.jsonl is read directly: its retrieved chunks are the
passages, its first reference answer the preferred one, cited with the retrieved gold
chunk that shares most words with it (rows whose answer-bearing chunk was not retrieved
are left out: the reference cannot be grounded in what the model saw); on an unanswerable
question the preferred answer is ABSTENTION, and an answer that abstained is right.

Why one chunk: rag eval's gold is every chunk of the file that states the answer, and a
preferred answer citing all of them taught DPO to cite every passage (36 of 78 pairs on
the sample corpus cited two; the trained model then cited both passages in 11 of 26 test
answers where the base did in 3, and its citation precision fell). The verdicts keep the
file-level gold, as rag eval's precision does.

`citation_pairs` (the default) adds what an evaluation alone rarely shows: for each
grounded row, the reference citing a passage that does not hold it is rejected against the
same reference citing the right one, so DPO learns which passage to cite, not only to
cite. Chosen on held-out training questions (bench/dpo_from_eval.sh, README "Preference
training"): without them the DPO run rambled past its end of turn and failed the export's
stop gate (18/20); with them it passed and raised citation precision and F1.

Output: an alpaca preference file `<name>.json` (instruction, input, system, chosen,
rejected) and its dataset_info.json entry with "ranking": true, in LLaMA-Factory's layout.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.common import atomic
from services.common.errors import BadInput
from services.common.rag_prompt import ABSTENTION, format_context, system_prompt
from services.trainer import datasets as ds

F1_CORRECT = 0.5
_MARKER = re.compile(r"\[(\d{1,2})\]")
_PASSAGE_HEAD = re.compile(r"^Passage \[(\d{1,2})\] \(", re.MULTILINE)
_WORD = re.compile(r"[\u4e00-\u9fff]|[^\W_]+")
COLUMNS = {
    "prompt": "instruction",
    "query": "input",
    "system": "system",
    "chosen": "chosen",
    "rejected": "rejected",
}


@dataclass(frozen=True)
class ContextPassage:
    text: str
    file_name: str = "context"
    page: str | None = None


@dataclass
class EvalRow:
    """One evaluated question, validated."""

    where: str
    question: str
    passages: list[ContextPassage]
    context: str  # the formatted block the model saw
    answer: str
    reference: str
    citation: list[int]
    correct: bool | None = None
    cited: bool | None = None
    overcited: bool | None = None
    # passages an answer may cite without being over-cited (rag eval: every chunk of the
    # gold file; else the citation)
    bearing: list[int] = field(default_factory=list)


@dataclass
class PrefsResult:
    name: str
    data_file: Path
    dataset_info: Path
    rows: int
    pairs: int
    skipped: int  # correct, cited and not over-cited: nothing to learn
    ungrounded: int = 0  # rag eval rows whose answer-bearing chunk was not retrieved
    reasons: dict[str, int] = field(default_factory=dict)  # wrong / uncited / overcited / ...
    citation_pairs: int = 0  # of `pairs`: the right passage cited over a wrong one
    replaced: bool = False


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def token_f1(prediction: str, reference: str) -> float:
    p, r = Counter(words(prediction)), Counter(words(reference))
    common = sum((p & r).values())
    if not common:
        return 0.0
    precision, recall = common / sum(p.values()), common / sum(r.values())
    return 2 * precision * recall / (precision + recall)


def is_correct(answer: str, reference: str) -> bool:
    """The answer holds every number of the reference, and its words or F1 >= 0.5.

    Numbers are required outright: "founded in 2018" shares 5 of 6 words with "founded
    in 2016" (F1 0.83) and is still wrong.
    """
    answer, reference = _MARKER.sub("", answer), _MARKER.sub("", reference)
    ref = words(reference)
    got = set(words(answer))
    if not ref or not all(w in got for w in ref if w.isdigit()):
        return False
    return all(w in got for w in ref) or token_f1(answer, reference) >= F1_CORRECT


def cited_numbers(text: str, n_passages: int) -> list[int]:
    return sorted({int(m) for m in _MARKER.findall(text) if 1 <= int(m) <= n_passages})


# ---- reading rows ------------------------------------------------------------------------


def _passages(value: Any, where: str, probs: ds.Problems) -> tuple[list[ContextPassage], str]:
    """The passages and the context block exactly as the serving prompt lays them out."""
    if isinstance(value, str):
        heads = _PASSAGE_HEAD.findall(value)
        if heads:  # already the formatted block: kept verbatim
            bodies = _PASSAGE_HEAD.split(value)[2::2]
            return [ContextPassage(b.split("\n", 1)[-1].strip()) for b in bodies], value.strip()
        p = [ContextPassage(value)]
        return p, format_context(p)
    if not isinstance(value, list) or not value:
        probs.add(where, "context", "must be the passages: a non-empty list, or a string")
        return [], ""
    out: list[ContextPassage] = []
    for j, item in enumerate(value):
        if isinstance(item, str):
            out.append(ContextPassage(item))
        elif isinstance(item, dict) and isinstance(item.get("text"), str):
            name = item.get("file_name") or item.get("source") or "context"
            page = item.get("page")
            out.append(ContextPassage(item["text"], str(name), str(page) if page else None))
        else:
            probs.add(where, f"context[{j}]", "must be a string or an object with 'text'")
            return [], ""
    context = format_context(out)  # cut where the RAG API cuts it
    return out[: len(_PASSAGE_HEAD.findall(context))], context


def _citation(value: Any, n: int, where: str, probs: ds.Problems) -> list[int] | None:
    if value is None:
        return None
    if value == []:
        return []  # nothing to cite: the right answer is that the passages lack it
    if isinstance(value, bool):
        nums: list[Any] = []
    elif isinstance(value, int):
        nums = [value]
    elif isinstance(value, str):
        nums = [int(x) for x in re.findall(r"\d+", value)]
    elif isinstance(value, list):
        nums = value
    else:
        nums = []
    if not nums or not all(isinstance(x, int) and 1 <= x <= n for x in nums):
        probs.add(where, "citation", f"must name passage numbers between 1 and {n}")
        return None
    return sorted(set(nums))


def _best_passage(reference: str, passages: list[ContextPassage]) -> list[int]:
    ref = set(words(reference))
    overlaps = [len(ref & set(words(p.text))) for p in passages]
    best = max(range(len(passages)), key=lambda i: (overlaps[i], -i)) if passages else 0
    return [best + 1] if passages and overlaps[best] else []


def is_rag_eval_line(rec: Any) -> bool:
    return isinstance(rec, dict) and "retrieved" in rec and "answers" in rec


def from_rag_eval(rec: dict[str, Any], where: str, probs: ds.Problems) -> dict[str, Any] | None:
    """A line of `rag eval`'s questions.jsonl in the generic row shape; None when its
    answer-bearing chunk was not retrieved (nothing in the prompt grounds the reference)."""
    retrieved = rec["retrieved"]
    if not isinstance(retrieved, list) or not all(
        isinstance(c, dict) and isinstance(c.get("text"), str) for c in retrieved
    ):
        probs.add(where, "retrieved", "must be a list of chunks with 'text'")
        return None
    context = [{"text": c["text"], "file_name": c.get("file_name") or "context"} for c in retrieved]
    base = {"question": rec.get("question"), "context": context, "answer": rec.get("answer")}
    if rec.get("answerable") is False:
        abstained = rec.get("abstained")
        return {
            **base,
            "reference": ABSTENTION,
            "citation": [],
            "correct": abstained if isinstance(abstained, bool) else None,
            "cited": True,
        }
    answers = [a for a in rec["answers"] or [] if isinstance(a, str) and a.strip()]
    gold = [i for i, c in enumerate(retrieved, start=1) if c.get("gold") is True]
    if not answers or not gold:
        return None
    f1 = (rec.get("scores") or {}).get("f1")
    cited = rec.get("cited") or []
    cited = cited if isinstance(cited, list) else []
    holding = _best_passage(answers[0], [ContextPassage(retrieved[g - 1]["text"]) for g in gold])
    return {
        **base,
        "reference": answers[0],
        "citation": [gold[holding[0] - 1]] if holding else gold,
        "bearing": gold,
        "correct": isinstance(f1, int | float) and f1 >= F1_CORRECT,
        "cited": bool(set(cited) & set(gold)),
        "overcited": bool(set(cited) - set(gold)),
    }


def _row(rec: Any, where: str, probs: ds.Problems) -> EvalRow | None:
    before = probs.count
    if not isinstance(rec, dict):
        probs.add(where, "(record)", f"must be a JSON object, got {type(rec).__name__}")
        return None
    for key in ("question", "answer", "reference"):
        if not isinstance(rec.get(key), str):
            probs.add(where, key, "is missing or not a string")
    if isinstance(rec.get("question"), str) and not rec["question"].strip():
        probs.add(where, "question", "is empty")
    if isinstance(rec.get("reference"), str) and not rec["reference"].strip():
        probs.add(where, "reference", "is empty (the preferred answer)")
    if "context" not in rec:
        probs.add(where, "context", "is missing (the passages the model was given)")
        return None
    passages, context = _passages(rec["context"], where, probs)
    for key in ("correct", "cited", "overcited"):
        if rec.get(key) is not None and not isinstance(rec[key], bool):
            probs.add(where, key, "must be true or false when given")
    if probs.count != before:
        return None
    citation = _citation(rec.get("citation"), len(passages), where, probs)
    if citation is None and rec.get("citation") is None:
        citation = cited_numbers(rec["reference"], len(passages)) or _best_passage(
            rec["reference"], passages
        )
        if not citation:
            probs.add(
                where,
                "citation",
                "is missing and the reference shares no word with any passage; "
                "give the passage number",
            )
    if probs.count != before or citation is None:
        return None
    bearing = rec.get("bearing")
    return EvalRow(
        where,
        rec["question"],
        passages,
        context,
        rec["answer"],
        rec["reference"],
        citation,
        rec.get("correct"),
        rec.get("cited"),
        rec.get("overcited"),
        bearing if isinstance(bearing, list) else citation,
    )


def read_eval_rows(path: Path) -> tuple[list[EvalRow], int]:
    """Every usable row of an evaluation report, validated (all problems reported at
    once), and how many rag eval rows were left out as ungrounded."""
    if not path.is_file():
        raise BadInput(
            f"Evaluation report {path} does not exist.",
            hint="Pass the JSONL a RAG evaluation wrote (question, context, answer, reference).",
        )
    if path.suffix not in (".jsonl", ".json"):
        raise BadInput(f"{path} is not .jsonl or .json.", hint="Write one JSON object per line.")
    probs = ds.Problems()
    rows: list[EvalRow] = []
    ungrounded = 0
    for where, rec in ds.read_records(path):
        if is_rag_eval_line(rec):
            rec = from_rag_eval(rec, where, probs)
            if rec is None:
                ungrounded += 1
                continue
        if r := _row(rec, where, probs):
            rows.append(r)
    probs.raise_if_any(
        str(path),
        hint="Each row needs question, context (a list of passages), answer (the model's), "
        "reference (the right answer) and optionally citation (a passage number).",
    )
    if not rows:
        raise BadInput(
            f"{path} holds no usable rows"
            + (
                f" ({ungrounded} whose answer-bearing passage was not retrieved)."
                if ungrounded
                else "."
            ),
            hint="Run the evaluation first, or with a larger --top-k.",
        )
    return rows, ungrounded


# ---- building pairs ----------------------------------------------------------------------


def chosen_answer(row: EvalRow) -> str:
    """The reference answer ending with its citation, as the serving prompt asks."""
    if not row.citation or cited_numbers(row.reference, len(row.passages)):
        return row.reference.strip()
    return row.reference.rstrip() + " " + "".join(f"[{i}]" for i in row.citation)


def failure(row: EvalRow) -> str | None:
    """Why the model's answer is worse than the reference ('wrong', 'uncited', 'overcited':
    it cites the right passage and also one without the answer, which lowers citation
    precision; joined by '+'), or None when it is right and cites only passages that hold
    the answer."""
    correct = row.correct if row.correct is not None else is_correct(row.answer, row.reference)
    said = set(cited_numbers(row.answer, len(row.passages)))
    cited = row.cited if row.cited is not None else bool(said & set(row.citation))
    # beside the right passage: an answer citing only wrong ones is uncited
    over = cited and (row.overcited if row.overcited is not None else bool(said - set(row.bearing)))
    reasons = [
        r for r, bad in (("wrong", not correct), ("uncited", not cited), ("overcited", over)) if bad
    ]
    return "+".join(reasons) or None


def preference_record(row: EvalRow, rejected: str | None = None) -> dict[str, str]:
    """An alpaca preference record whose system + instruction is the serving prompt."""
    return {
        "instruction": row.question,
        "input": "",
        "system": system_prompt(row.context),
        "chosen": chosen_answer(row),
        "rejected": row.answer if rejected is None else rejected,
    }


def wrong_citation(row: EvalRow) -> str | None:
    """The reference citing the first passage that does not hold it (None when every
    passage does, or the reference has no citation: an abstention)."""
    wrong = [i for i in range(1, len(row.passages) + 1) if i not in row.bearing]
    if not row.citation or not wrong:
        return None
    return _MARKER.sub("", row.reference).rstrip() + f" [{wrong[0]}]"


def build_prefs(
    report: Path, out_dir: Path, name: str, *, citation_pairs: bool = True
) -> PrefsResult:
    """Write `out_dir/<name>.json` and its dataset_info.json entry (ranking: true);
    `citation_pairs`: also the right passage cited over a wrong one, for every grounded
    row (see the module's docstring)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise BadInput(f"'{name}' is not a usable dataset name.", hint="Use letters, digits, _-.")
    if report.is_dir():  # a `rag eval` report folder
        report = report / "questions.jsonl"
    rows, ungrounded = read_eval_rows(report)
    records: list[dict[str, str]] = []
    reasons: Counter[str] = Counter()
    contrasts = 0
    for row in rows:
        why = failure(row)
        if why is not None:
            reasons[why] += 1
            records.append(preference_record(row))
        if citation_pairs and (rejected := wrong_citation(row)) is not None:
            records.append(preference_record(row, rejected))
            contrasts += 1
    if not records:
        raise BadInput(
            f"All {len(rows)} answers in {report} are correct and cited: no preference to learn.",
            hint="Evaluate on harder questions, or with another model.",
        )
    info_path = out_dir / ds.DATA_CONFIG
    info = ds.read_dataset_info(out_dir) if info_path.is_file() else {}
    replaced = name in info
    info[name] = {"file_name": f"{name}.json", "ranking": True, "columns": dict(COLUMNS)}
    data_file = out_dir / f"{name}.json"
    atomic.write_text(data_file, json.dumps(records, ensure_ascii=False, indent=1) + "\n")
    atomic.write_json(info_path, info)
    ds.load_dataset(name, out_dir, stage="dpo")  # what `llm train` will read must load
    return PrefsResult(
        name,
        data_file,
        info_path,
        rows=len(rows),
        pairs=len(records),
        skipped=len(rows) - sum(reasons.values()),
        ungrounded=ungrounded,
        reasons=dict(reasons),
        replaced=replaced,
        citation_pairs=contrasts,
    )
