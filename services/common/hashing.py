"""Content hashes used for idempotent ingest and model fingerprints."""

from __future__ import annotations

import hashlib
from pathlib import Path

_BUF = 1 << 20


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_BUF):
            h.update(chunk)
    return h.hexdigest()


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dir_fingerprint(root: Path) -> str:
    """Hash of every file's relative path and content under `root` (symlinks followed).

    Two embedders with the same fingerprint produce the same vectors, which is what
    decides whether a Chroma collection can be queried with a given embedder.
    """
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        rel = p.relative_to(root).as_posix()
        if rel.startswith(".") or "/." in rel or rel.endswith("README.md"):
            continue
        h.update(rel.encode())
        h.update(file_sha256(p).encode())
    return h.hexdigest()
