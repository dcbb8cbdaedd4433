"""The report folder: reports/rag-eval-<time>-<dataset>-<id>/ with report.json, report.md,
f1_heatmap.png (F1 over LLM x embedder, one panel per retrieval mode) and questions.jsonl
(every answer with its citations, retrieved chunks and scores), written atomically."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.common import atomic
from services.common.reports import pyplot
from services.rag_api.rag_eval.records import Combo, QuestionResult

KIND = "rag-eval"
HEATMAP = "f1_heatmap.png"
QUESTIONS = "questions.jsonl"
# (key in a summary, column title); hit@k and mrr@k are added with the run's k. Two
# groups, so the terminal shows them as two tables that fit 80 columns.
QUALITY_COLUMNS = (
    ("f1", "F1"),
    ("em", "EM"),
    ("rouge_l", "ROUGE-L"),
    ("citation_precision", "cite P"),
    ("citation_recall", "cite R"),
    ("no_citation", "no cite"),
    ("faithfulness", "faithful"),
)
BEHAVIOUR_COLUMNS = (
    ("abstention", "abstain (unans.)"),
    ("false_abstention", "abstain (ans.)"),
    ("gated", "gated"),
    ("latency_p50_s", "p50 s"),
    ("latency_p95_s", "p95 s"),
    ("tokens_per_s", "tok/s"),
)
COLUMNS = QUALITY_COLUMNS + BEHAVIOUR_COLUMNS
LEGEND = """\
- hit@k / MRR@k: rank of the first retrieved chunk of the gold passage that holds the answer
- EM / F1: SQuAD v1.1 normalization (English); CMRC 2018 character F1 and EM (Chinese)
- ROUGE-L: LCS F-measure against the reference answers
- cite P: share of cited chunks that hold the answer; cite R: an answer-bearing chunk that
  was retrieved is cited; no cite: share of answers citing nothing
- faithful: share of answer tokens found in the chunks it cites
- abstain (unans.): share of questions the collection cannot answer that were answered
  "not in the documents" (the rest were invented); abstain (ans.): the same on answerable ones
- gated: share of answers the relevance gate gave (no passage as similar as the build's
  calibrated min_relevance, `tunestack rag calibrate`; the LLM was not asked); — : no gate
- judge correct / grounded: the --judge model's grades (0-10, shown /10), when one was used;
  judge unreadable: answers whose grades were not found in the judge's reply
- p50/p95 s: seconds per answer (retrieval + prompt + generation); tok/s: generated
  tokens per second of LLM time (prompt processing included)"""


JUDGE_COLUMNS = (
    ("judge_correctness", "judge correct"),
    ("judge_groundedness", "judge grounded"),
    ("judge_unreadable", "judge unreadable"),
)


def columns(top_k: int, judge: bool = False) -> list[tuple[str, str]]:
    cols = [(f"hit@{top_k}", f"hit@{top_k}"), (f"mrr@{top_k}", f"MRR@{top_k}"), *COLUMNS]
    return cols + list(JUDGE_COLUMNS) if judge else cols


def fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def grid_rows(combos: Sequence[Combo], summary: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**c.to_dict(), **summary[c.key]} for c in combos]


def markdown(body: dict[str, Any]) -> str:
    k = int(body["top_k"])
    cols = columns(k, bool(body.get("judge")))
    lines = [
        f"# RAG evaluation: {body['dataset']} on {body['collection']}",
        "",
        f"{body['created']} · top_k {k} · modes {', '.join(body['modes'])} · "
        f"made by {body['made_by']}"
        + (f" · judge {body['judge']}" if body.get("judge") else " · no LLM judge"),
        "",
        "Questions: " + ", ".join(f"{v} {n.replace('_', ' ')}" for n, v in body["counts"].items()),
        "",
        "| LLM | embedder | mode | n | " + " | ".join(t for _, t in cols) + " |",
        "|---" * (4 + len(cols)) + "|",
    ]
    for row in body["grid"]:
        cells = [fmt(row.get(key)) for key, _ in cols]
        lines.append(
            f"| {row['llm']} | {row['embedder']} | {row['mode']} | {row['questions']} | "
            + " | ".join(cells)
            + " |"
        )
    if body["notes"]:
        lines += ["", "Notes:", "", *(f"- {n}" for n in body["notes"])]
    lines += ["", LEGEND, ""]
    return "\n".join(lines)


def heatmap(body: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    llms, embedders, modes = body["llms"], body["embedders"], body["modes"]
    metric = "f1" if any(r.get("f1") is not None for r in body["grid"]) else "faithfulness"
    cell = {(r["llm"], r["embedder"], r["mode"]): r.get(metric) for r in body["grid"]}
    fig, axes = plt.subplots(
        1,
        len(modes),
        figsize=(1.2 + 1.9 * len(embedders) * len(modes), 1.4 + 0.7 * len(llms)),
        squeeze=False,
    )
    for ax, mode in zip(axes[0], modes, strict=True):
        values = [
            [cell.get((llm, e, mode)) for e in embedders] for llm in llms
        ]  # None: not measured
        grid = [[float("nan") if v is None else v for v in row] for row in values]
        ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(embedders)), embedders, rotation=20, ha="right", fontsize=8)
        ax.set_yticks(range(len(llms)), llms, fontsize=8)
        ax.set_title(f"{metric} · {mode}", fontsize=9)
        for i, row in enumerate(values):
            for j, v in enumerate(row):
                ax.text(
                    j,
                    i,
                    "—" if v is None else f"{v:.2f}",
                    ha="center",
                    va="center",
                    color="white" if v is None or v < 0.6 else "black",
                    fontsize=9,
                )
    fig.suptitle(f"{body['dataset']} on {body['collection']}: {metric}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def folder_name(dataset: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(dataset).stem).strip("-")[:60] or "dataset"
    # the same run twice within a second still gets two folders
    return f"{KIND}-{time.strftime('%Y%m%d-%H%M%S')}-{stem}-{uuid.uuid4().hex[:6]}"


def write_report(reports: Path, body: dict[str, Any], rows: Sequence[QuestionResult]) -> Path:
    """reports/<name>/{report.json, report.md, f1_heatmap.png, questions.jsonl}."""
    final = reports / folder_name(str(body["dataset"]))
    with atomic.staged_dir(final) as tmp:
        atomic.write_json(tmp / "report.json", body)
        (tmp / "report.md").write_text(markdown(body), encoding="utf-8")
        with (tmp / QUESTIONS).open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
        heatmap(body, tmp / HEATMAP)
    return final
