"""uniem-style training records (JSON list or JSONL): pair {text, text_pos}, triplet
{text, text_pos, text_neg}, scored pair {sentence1, sentence2, label}.

Every problem is reported with the file, the line (JSONL) or record index, and the field,
because a 10k-line file with "KeyError: 'text_pos'" is not something a person can fix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from services.common.errors import BadInput
from services.common.qa import read_json_file

RecordKind = Literal["pair", "triplet", "scored"]
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "triplet": ("text", "text_pos", "text_neg"),
    "pair": ("text", "text_pos"),
    "scored": ("sentence1", "sentence2", "label"),
}


@dataclass
class Records:
    kind: RecordKind
    rows: list[dict[str, Any]] = field(default_factory=list)
    source: str = ""


def load_records(path: Path) -> Records:
    """uniem-style records from JSON (a list) or JSONL; one kind per file."""
    rows: list[tuple[str, Any]] = []
    if path.suffix.lower() == ".jsonl":
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except FileNotFoundError as e:
            raise BadInput(f"{path}: no such file.") from e
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                rows.append((f"line {n}", json.loads(line)))
            except json.JSONDecodeError as e:
                raise BadInput(f"{path} line {n}: invalid JSON ({e.msg}, column {e.colno}).") from e
    else:
        data = read_json_file(path)
        if not isinstance(data, list):
            raise BadInput(f"{path}: expected a list of records.")
        rows = [(f"record {i}", r) for i, r in enumerate(data)]
    if not rows:
        raise BadInput(f"{path}: no records.", hint="Add at least one training pair.")
    kind: str | None = None
    out = []
    for where, row in rows:
        if not isinstance(row, dict):
            raise BadInput(f"{path} {where}: expected an object, got {type(row).__name__}.")
        this = next((k for k, f in KIND_FIELDS.items() if all(x in row for x in f)), None)
        if this is None:
            guess = "scored" if "sentence1" in row else ("triplet" if "text_neg" in row else "pair")
            missing = [f for f in KIND_FIELDS[guess] if f not in row]
            raise BadInput(
                f"{path} {where}: missing field '{missing[0]}' "
                f"(a {guess} record needs {', '.join(KIND_FIELDS[guess])})."
            )
        if kind is None:
            kind = this
        elif this != kind:
            raise BadInput(
                f"{path} {where}: a {this} record in a file of {kind} records.",
                hint="Keep one record kind per file.",
            )
        fields = KIND_FIELDS[this]
        for f in fields:
            v = row[f]
            if f == "label":
                if not isinstance(v, (int, float)) or isinstance(v, bool):
                    raise BadInput(f"{path} {where}: field 'label' must be a number, got {v!r}.")
            elif not isinstance(v, str) or not v.strip():
                raise BadInput(f"{path} {where}: field '{f}' must be non-empty text.")
        out.append({f: row[f] for f in fields})
    return Records(kind, out, str(path))  # type: ignore[arg-type]
