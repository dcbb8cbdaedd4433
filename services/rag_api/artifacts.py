"""Which registry and report files the API may serve, and how they are found safely.

The UI shows loss curves and report charts that live under TUNESTACK_HOME. Serving
files by name is the classic path-traversal hole, so a file is served only when
(1) its name is a plain file name matching a short list of artifact patterns, and
(2) the resolved path (symlinks followed) sits directly in one of the entry's roots.
Nothing else under TUNESTACK_HOME (weights, uploads, Chroma data) is ever reachable.
"""

from __future__ import annotations

import re
from pathlib import Path

from services.common.errors import NotFound
from services.common.records import Record

ARTIFACT_NAME = re.compile(
    r"^(?:training_[A-Za-z0-9_.-]*\.png|metrics\.png|trainer_log\.jsonl"
    r"|[A-Za-z0-9_-]*results\.json|report\.md|report\.json|Modelfile"
    r"|f1_heatmap\.png|questions\.jsonl)$"
)
SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
MEDIA_TYPES = {
    ".png": "image/png",
    ".json": "application/json",
    ".jsonl": "application/x-ndjson",
    ".md": "text/markdown; charset=utf-8",
}


def entry_roots(entry_dir: Path, record: Record | None) -> list[Path]:
    """Folders an entry's artifacts live in: its registry dir and the trainer's output dir."""
    roots = [entry_dir]
    out = getattr(record, "output_dir", None)
    if isinstance(out, str) and out:
        p = Path(out)
        if p.is_dir() and p.resolve() != entry_dir.resolve():
            roots.append(p)
    return roots


def list_artifacts(roots: list[Path]) -> list[tuple[str, Path]]:
    """(name, path) of every servable file in roots; the first root wins on a name clash."""
    seen: dict[str, Path] = {}
    for root in roots:
        if not root.is_dir():
            continue
        for p in sorted(root.iterdir()):
            if p.name not in seen and ARTIFACT_NAME.match(p.name) and _inside(p, root):
                seen[p.name] = p
    return list(seen.items())


def find_artifact(roots: list[Path], name: str) -> Path:
    """The file `name` in one of roots, or NotFound: never a path outside them."""
    if ARTIFACT_NAME.match(name):
        for root in roots:
            p = root / name
            if p.is_file() and _inside(p, root):
                return p
    raise NotFound(
        f"No artifact named '{name}'.",
        hint="GET the model or report first: its 'files' lists what can be fetched.",
    )


def media_type(path: Path) -> str:
    return "text/plain; charset=utf-8" if path.name == "Modelfile" else MEDIA_TYPES[path.suffix]


def _inside(p: Path, root: Path) -> bool:
    try:
        resolved = p.resolve(strict=True)
    except OSError:
        return False
    return resolved.is_file() and resolved.parent == root.resolve()
