"""QA sets for a RAG evaluation, in the formats people already have.

- SQuAD v1.1 JSON (`data[].paragraphs[].qas[]`, answers with spans; SQuAD 2.0's
  `is_impossible` marks a question its passage does not answer)
- CMRC 2018 JSON (the same layout, paragraphs with ids; Chinese)
- LlamaIndex EmbeddingQAFinetuneDataset JSON (`queries`, `corpus`, `relevant_docs`) plus an
  `answers` map (query id -> answer or list of answers); an empty relevant_docs list marks
  a question no passage answers
- JSONL (or a JSON list) of records: `question`, optional `answer` (text or list),
  `source` (the file the answer is in, or the passage text), `id`, `unanswerable`

Messages name the dataset by the name it was given (never a server path).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from services.common.errors import BadInput
from services.rag_api.rag_eval.records import EvalDataset, EvalQuestion

FORMATS_HINT = (
    "Use SQuAD v1.1 JSON (data/paragraphs/qas with answers), CMRC 2018 JSON (the same "
    "layout), EmbeddingQAFinetuneDataset JSON (queries/corpus/relevant_docs plus an "
    "optional 'answers' map), or JSONL with one {question, answer, source} object a line."
)
FORMATS = ("squad", "cmrc2018", "embedding-qa", "jsonl")


def _answers(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value.strip() else ()
    if isinstance(value, dict):  # a SQuAD answer object
        return _answers(value.get("text"))
    if isinstance(value, list):
        return tuple(dict.fromkeys(a for v in value for a in _answers(v)))
    return (str(value),)


def _read_text(path: Path, name: str) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise BadInput(f"{name}: no such file.") from None
    except UnicodeDecodeError as e:
        raise BadInput(f"{name}: not UTF-8 text ({e.reason}).") from None
    except OSError as e:
        raise BadInput(f"{name}: cannot be read ({e.strerror}).") from None


def load_dataset(path: Path, name: str | None = None) -> EvalDataset:
    """Any of the formats above, detected by content; BadInput naming the formats else."""
    shown = name or path.name
    text = _read_text(path, shown)
    if path.suffix.lower() == ".jsonl":
        return _from_records(_jsonl(text, shown), shown, "line")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadInput(
            f"{shown}: not JSON (line {e.lineno}, column {e.colno}: {e.msg}).",
            hint=FORMATS_HINT + " A JSONL file needs the .jsonl suffix.",
        ) from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        return _from_squad(data, shown)
    if isinstance(data, dict) and {"queries", "corpus", "relevant_docs"} <= set(data):
        return _from_embedding_qa(data, shown)
    if isinstance(data, list) and all(isinstance(r, dict) for r in data):
        return _from_records(list(enumerate(data, start=1)), shown, "record")
    what = (
        "top-level keys: " + ", ".join(map(str, list(data)[:8]))
        if isinstance(data, dict)
        else type(data).__name__
    )
    raise BadInput(f"{shown}: unknown dataset format ({what}).", hint=FORMATS_HINT)


def _jsonl(text: str, shown: str) -> list[tuple[int, dict[str, Any]]]:
    records = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise BadInput(f"{shown}, line {n}: not JSON ({e.msg}).", hint=FORMATS_HINT) from None
        if not isinstance(rec, dict):
            raise BadInput(f"{shown}, line {n}: expected an object.", hint=FORMATS_HINT)
        records.append((n, rec))
    return records


def _from_records(records: list[tuple[int, dict[str, Any]]], shown: str, unit: str) -> EvalDataset:
    out: list[EvalQuestion] = []
    for n, rec in records:
        q = rec.get("question")
        if not isinstance(q, str) or not q.strip():
            raise BadInput(
                f"{shown}, {unit} {n}: no 'question' text.",
                hint=FORMATS_HINT,
            )
        source = rec.get("source")
        answers = _answers(rec.get("answer", rec.get("answers")))
        is_text = isinstance(source, str) and (len(source) > 200 or "\n" in source)
        out.append(
            EvalQuestion(
                id=str(rec.get("id") or f"q{n}"),
                question=q.strip(),
                answers=answers,
                passages=(source,) if is_text and isinstance(source, str) else (),
                source=source if isinstance(source, str) and source and not is_text else None,
                unanswerable=bool(rec.get("unanswerable") or rec.get("is_impossible")),
            )
        )
    return _checked(EvalDataset(shown, "jsonl", out))


def _from_squad(data: dict[str, Any], shown: str) -> EvalDataset:
    out: list[EvalQuestion] = []
    cmrc = False
    for a, article in enumerate(data["data"]):
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            raise BadInput(f"{shown}: data[{a}] has no 'paragraphs' list.", hint=FORMATS_HINT)
        for p, para in enumerate(article["paragraphs"]):
            if not isinstance(para, dict) or not isinstance(para.get("context"), str):
                raise BadInput(
                    f"{shown}: data[{a}].paragraphs[{p}] has no 'context' text.",
                    hint=FORMATS_HINT,
                )
            cmrc = cmrc or "id" in para
            for i, qa in enumerate(para.get("qas") or []):
                if not isinstance(qa, dict) or not isinstance(qa.get("question"), str):
                    raise BadInput(
                        f"{shown}: data[{a}].paragraphs[{p}].qas[{i}] has no 'question'.",
                        hint=FORMATS_HINT,
                    )
                out.append(
                    EvalQuestion(
                        id=str(qa.get("id") or f"a{a}p{p}q{i}"),
                        question=qa["question"].strip(),
                        answers=_answers(qa.get("answers")),
                        passages=(para["context"],),
                        unanswerable=bool(qa.get("is_impossible")),
                    )
                )
    return _checked(EvalDataset(shown, "cmrc2018" if cmrc else "squad", out))


def _from_embedding_qa(data: dict[str, Any], shown: str) -> EvalDataset:
    queries, corpus, rel = data["queries"], data["corpus"], data["relevant_docs"]
    answers = data.get("answers") or {}
    for key, val in (
        ("queries", queries),
        ("corpus", corpus),
        ("relevant_docs", rel),
        ("answers", answers),
    ):
        if not isinstance(val, dict):
            raise BadInput(f"{shown}: '{key}' must map ids to values.", hint=FORMATS_HINT)
    out: list[EvalQuestion] = []
    for qid, question in queries.items():
        docs = rel.get(qid, [])
        docs = [docs] if isinstance(docs, str) else docs
        if not isinstance(docs, list):
            raise BadInput(f"{shown}: relevant_docs['{qid}'] must be a list of corpus ids.")
        lost = [str(d) for d in docs if str(d) not in corpus]
        if lost:
            raise BadInput(
                f"{shown}: relevant_docs['{qid}'] names ids missing from the corpus: "
                + ", ".join(lost[:5]),
                hint="Every relevant id must be a key of 'corpus'.",
            )
        out.append(
            EvalQuestion(
                id=str(qid),
                question=str(question).strip(),
                answers=_answers(answers.get(qid)),
                passages=tuple(str(corpus[str(d)]) for d in docs),
                unanswerable=qid in rel and not docs,
            )
        )
    return _checked(EvalDataset(shown, "embedding-qa", out))


def _checked(ds: EvalDataset) -> EvalDataset:
    if not ds.questions:
        raise BadInput(f"{ds.name}: no questions.", hint=FORMATS_HINT)
    seen: set[str] = set()
    for q in ds.questions:
        if q.id in seen:
            raise BadInput(f"{ds.name}: question id '{q.id}' appears twice.")
        seen.add(q.id)
    return ds


def missing_metrics_note(ds: EvalDataset) -> list[str]:
    """What cannot be computed for this dataset, and what still runs."""
    notes = []
    if not ds.has_answers:
        notes.append(
            f"{ds.name} has no reference answers: exact match, F1 and ROUGE-L cannot be "
            "computed. Still computed: "
            + (
                "retrieval hit@k and MRR, citation precision and recall (against the gold "
                "passage), "
                if ds.has_passages
                else ""
            )
            + "faithfulness to the cited chunks, abstention, latency and tokens/s."
        )
    if not ds.has_passages and ds.has_answers:
        notes.append(
            f"{ds.name} names no passages: a chunk counts as answer-bearing when it contains a "
            "reference answer verbatim (retrieval and citation figures are approximate)."
        )
    if not ds.has_passages and not ds.has_answers:
        notes.append(
            f"{ds.name} names neither answers nor passages: retrieval and citation accuracy "
            "cannot be computed."
        )
    return notes
