"""Passages to synthesize training queries from: a documents folder or a corpus file.

A corpus file may be SQuAD JSON (only the paragraphs are read: the questions are never
looked at, so a tuned model cannot have seen evaluation questions), an
EmbeddingQAFinetuneDataset JSON (its `corpus`), JSONL with a `text` field per line, or
plain text with passages separated by blank lines.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from services.common.documents.chunking import Chunker
from services.common.documents.files import expand
from services.common.documents.loaders import UnreadableFile, load
from services.common.errors import BadInput
from services.common.qa import read_json_file


def load_corpus_file(path: Path) -> dict[str, str]:
    if not path.exists():
        raise BadInput(f"{path}: no such file.")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        out: dict[str, str] = {}
        for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise BadInput(f"{path} line {n}: invalid JSON ({e.msg}).") from e
            if not isinstance(row, dict) or not str(row.get("text", "")).strip():
                raise BadInput(f"{path} line {n}: missing field 'text'.")
            out[str(row.get("id") or f"line{n}")] = str(row["text"])
        return _nonempty(out, path)
    if suffix == ".json":
        data = read_json_file(path)
        if isinstance(data, dict) and "corpus" in data and isinstance(data["corpus"], dict):
            return _nonempty({str(k): str(v) for k, v in data["corpus"].items()}, path)
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            out = {}
            for a, article in enumerate(data["data"]):
                for p, para in enumerate(article.get("paragraphs", [])):
                    out[f"a{a:03d}p{p:03d}"] = str(para.get("context", ""))
            return _nonempty(out, path)
        raise BadInput(f"{path}: no corpus found (expected SQuAD 'data' or a 'corpus' object).")
    text = path.read_text(encoding="utf-8-sig")
    blocks = [b.strip() for b in text.split("\n\n") if b.strip()]
    return _nonempty({f"b{i:05d}": b for i, b in enumerate(blocks)}, path)


def load_docs(
    path: Path, chunk_size: int, chunk_overlap: int, token_count: Callable[[str], list[int]]
) -> dict[str, str]:
    """Chunk a documents folder exactly as ingest does, so training passages look like
    the chunks the tuned embedder will retrieve."""
    files, _ = expand([path])
    chunker = Chunker(chunk_size, chunk_overlap, token_count)
    out: dict[str, str] = {}
    for f in files:
        try:
            sections = load(f, 64 * 2**20)
        except UnreadableFile:
            continue
        for s in sections:
            for i, c in enumerate(chunker.split(s.text)):
                key = hashlib.sha256(f"{f}:{s.page}:{i}".encode()).hexdigest()[:12]
                out[f"{f.stem}-{key}"] = c
    return _nonempty(out, path)


def _nonempty(corpus: dict[str, str], path: Path) -> dict[str, str]:
    corpus = {k: v for k, v in corpus.items() if v.strip()}
    if not corpus:
        raise BadInput(f"{path}: the corpus is empty.", hint="Give documents with some text.")
    return corpus
