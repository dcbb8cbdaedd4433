"""Question-answering datasets in the formats users already have: one home for the
embedding tuner (training and evaluation), the API's dataset uploads and its eval jobs.

- LlamaIndex's EmbeddingQAFinetuneDataset JSON: {"queries", "corpus", "relevant_docs"}
- SQuAD v1.1 JSON: each question -> its paragraph; the corpus is every paragraph

Every problem is reported with the file, the line (JSONL) or record index, and the field,
because a 10k-line file with "KeyError: 'text_pos'" is not something a person can fix.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common import atomic
from services.common.errors import BadInput


@dataclass
class QADataset:
    """Queries, a corpus, and which corpus ids answer each query."""

    queries: dict[str, str]
    corpus: dict[str, str]
    relevant_docs: dict[str, list[str]]
    source: str = ""

    def validate(self) -> QADataset:
        where = self.source or "dataset"
        if not self.corpus:
            raise BadInput(f"{where}: the corpus is empty.", hint="Give at least one passage.")
        if not self.queries:
            raise BadInput(f"{where}: there are no queries.")
        missing_q = [q for q in self.relevant_docs if q not in self.queries]
        if missing_q:
            raise BadInput(
                f"{where}: relevant_docs names queries not in 'queries': {', '.join(missing_q[:5])}"
            )
        for qid in self.queries:
            docs = self.relevant_docs.get(qid)
            if not docs:
                raise BadInput(
                    f"{where}: query '{qid}' has no entry in relevant_docs.",
                    hint="Every query needs at least one relevant corpus id.",
                )
            lost = [d for d in docs if d not in self.corpus]
            if lost:
                raise BadInput(
                    f"{where}: relevant_docs['{qid}'] names ids missing from the corpus: "
                    f"{', '.join(lost[:5])}",
                    hint="Every relevant id must be a key of 'corpus'.",
                )
        return self

    def to_json(self) -> dict[str, Any]:
        return {
            "queries": self.queries,
            "corpus": self.corpus,
            "relevant_docs": self.relevant_docs,
            "mode": "text",
        }

    def save(self, path: Path) -> None:
        atomic.write_json(path, self.to_json())

    def pairs(self) -> list[tuple[str, str]]:
        return [
            (self.queries[q], self.corpus[d])
            for q in self.queries
            for d in self.relevant_docs[q][:1]
        ]

    def subset(self, query_ids: list[str]) -> QADataset:
        return QADataset(
            {q: self.queries[q] for q in query_ids},
            self.corpus,
            {q: self.relevant_docs[q] for q in query_ids},
            self.source,
        )

    def fingerprint(self) -> str:
        h = hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode())
        return h.hexdigest()[:16]


# ---- loading ---------------------------------------------------------------------


def read_json_file(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as e:
        raise BadInput(f"{path}: no such file.") from e
    except UnicodeDecodeError as e:
        raise BadInput(f"{path}: not UTF-8 text ({e}).") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise BadInput(
            f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}.",
            hint="Fix the file; JSONL (one object per line) also works for records.",
        ) from e


def detect(path: Path) -> str:
    """'qa', 'squad' or 'records' by content, so users need not say which."""
    if path.suffix.lower() == ".jsonl":
        return "records"
    data = read_json_file(path)
    if isinstance(data, dict) and {"queries", "corpus", "relevant_docs"} <= set(data):
        return "qa"
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        return "squad"
    if isinstance(data, list):
        return "records"
    raise BadInput(
        f"{path}: unrecognised dataset layout (top-level keys: "
        f"{', '.join(map(str, data)) if isinstance(data, dict) else type(data).__name__}).",
        hint="Use EmbeddingQAFinetuneDataset JSON (queries/corpus/relevant_docs), SQuAD JSON, "
        "or records with text/text_pos[/text_neg] or sentence1/sentence2/label.",
    )


def load_qa(path: Path) -> QADataset:
    """EmbeddingQAFinetuneDataset JSON or SQuAD JSON (auto-converted)."""
    kind = detect(path)
    data = read_json_file(path)
    if kind == "squad":
        return squad_to_qa(data, str(path)).validate()
    if kind != "qa":
        raise BadInput(
            f"{path}: an evaluation set needs queries, a corpus and relevant docs.",
            hint="Use EmbeddingQAFinetuneDataset JSON or SQuAD v1.1 JSON.",
        )
    for key in ("queries", "corpus", "relevant_docs"):
        if not isinstance(data[key], dict):
            raise BadInput(f"{path}: '{key}' must be an object mapping ids to values.")
    rel: dict[str, list[str]] = {}
    for qid, docs in data["relevant_docs"].items():
        if isinstance(docs, str):
            docs = [docs]
        if not isinstance(docs, list):
            raise BadInput(f"{path}: relevant_docs['{qid}'] must be a list of corpus ids.")
        rel[str(qid)] = [str(d) for d in docs]
    return QADataset(
        {str(k): str(v) for k, v in data["queries"].items()},
        {str(k): str(v) for k, v in data["corpus"].items()},
        rel,
        str(path),
    ).validate()


def squad_to_qa(data: dict[str, Any], source: str = "") -> QADataset:
    queries: dict[str, str] = {}
    corpus: dict[str, str] = {}
    rel: dict[str, list[str]] = {}
    for a, article in enumerate(data.get("data", [])):
        for p, para in enumerate(article.get("paragraphs", [])):
            pid = f"a{a:03d}p{p:03d}"
            corpus[pid] = para["context"]
            for i, qa in enumerate(para.get("qas", [])):
                qid = str(qa.get("id") or f"{pid}q{i}")
                queries[qid] = qa["question"]
                rel[qid] = [pid]
    return QADataset(queries, corpus, rel, source)


def split_queries(ds: QADataset, val_fraction: float, seed: int = 0) -> tuple[QADataset, QADataset]:
    """Split by query: every passage stays trainable, validation asks new questions of it.

    That mirrors deployment, where the corpus is fixed and the questions are new; a split
    by passage would leave part of the corpus unadapted.
    """
    if not 0 <= val_fraction < 1:
        raise BadInput("--val-fraction must be in [0, 1).")
    ids = sorted(ds.queries)
    random.Random(seed).shuffle(ids)
    n_val = round(len(ids) * val_fraction)
    return ds.subset(sorted(ids[n_val:])), ds.subset(sorted(ids[:n_val]))
