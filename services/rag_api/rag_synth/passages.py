"""The passages examples are made of, shown to the model exactly as retrieval shows them.

A served passage is a chunk that ingest cut (its size in embedder tokens, its overlap)
labelled with its file name and page; a training passage cut or labelled differently
would teach the model a layout it never sees. So `--docs` goes through the same
loaders, read caps and Chunker as ingest, and `--corpus` (a file of ready passages: SQuAD
or EmbeddingQA JSON, JSONL with `text`, blank-line separated text) labels each passage
with the corpus file's name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.common.documents import loaders
from services.common.documents.chunking import Chunker
from services.common.documents.files import expand
from services.common.errors import BadInput
from services.embed_tuner.corpus import load_corpus_file


@dataclass(frozen=True)
class SynthPassage:
    """A chunk as retrieval returns it (rag_prompt.Passage) plus a stable id."""

    id: str  # hash of file, page and text: stable across runs (resume keys on it)
    text: str
    file_name: str
    page: str | None = None
    source: str = ""  # relative to the folder given (rag eval matches JSONL `source` on it)


def passage_id(file_name: str, page: str | None, text: str) -> str:
    return hashlib.sha256(f"{file_name}\0{page or ''}\0{text}".encode()).hexdigest()[:16]


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if root.is_dir() else path.name


def from_docs(
    root: Path,
    *,
    chunk_size: int,
    chunk_overlap: int,
    token_count: Callable[[str], list[int]],
    max_file_bytes: int,
    limits: loaders.LoadLimits,
) -> tuple[list[SynthPassage], list[str]]:
    """Every chunk of every readable file under `root`, and the files skipped (with why)."""
    files, skipped = expand([root])
    problems = [f"{s.path}: {s.reason}" for s in skipped]
    chunker = Chunker(chunk_size, chunk_overlap, token_count)
    base = root.expanduser().resolve()
    out: list[SynthPassage] = []
    for f in files:
        try:
            sections = loaders.load(f, max_file_bytes, limits)
        except loaders.UnreadableFile as e:
            problems.append(f"{f.name}: {e}")
            continue
        rel = _relative(f, base)
        for sec in sections:
            for c in chunker.split(sec.text):
                out.append(SynthPassage(passage_id(rel, sec.page, c), c, f.name, sec.page, rel))
    if not out:
        raise BadInput(
            f"No text found in {root}.",
            hint="Supported: " + ", ".join(loaders.SUPPORTED_SUFFIXES),
        )
    return _unique(out), problems


def from_corpus_file(path: Path) -> list[SynthPassage]:
    """Passages of a corpus file, each labelled with the file's name (no pages)."""
    corpus = load_corpus_file(path)
    return _unique(
        [SynthPassage(passage_id(path.name, None, t), t, path.name) for t in corpus.values()]
    )


def _unique(passages: list[SynthPassage]) -> list[SynthPassage]:
    """Identical chunks (a header repeated on every page) counted once."""
    return list({p.id: p for p in passages}.values())
