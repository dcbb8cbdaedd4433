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
from typing import Any

from services.common.errors import NotFound
from services.common.registry import Entry

ARTIFACT_NAME = re.compile(
    r"^(?:training_[A-Za-z0-9_.-]*\.png|metrics\.png|trainer_log\.jsonl"
    r"|[A-Za-z0-9_-]*results\.json|report\.md|report\.json|Modelfile)$"
)
SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
MEDIA_TYPES = {
    ".png": "image/png",
    ".json": "application/json",
    ".jsonl": "application/x-ndjson",
    ".md": "text/markdown; charset=utf-8",
}


def entry_roots(entry: Entry) -> list[Path]:
    """Folders an entry's artifacts live in: its registry dir and the trainer's output dir."""
    roots = [entry.dir]
    out = entry.meta.get("output_dir")
    if isinstance(out, str) and out:
        p = Path(out)
        if p.is_dir() and p.resolve() != entry.dir.resolve():
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


def _size(path: Any) -> int | None:
    if not isinstance(path, str) or not path:
        return None
    try:
        p = Path(path)
        return p.stat().st_size if p.is_file() else None
    except OSError:
        return None


def export_rows(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows for an export table from whatever meta.json records, with file sizes.

    Understands `gguf: {type: path}` (what the registry and the servable step write) and
    an `exports` list or mapping (what the converter records); unknown fields pass
    through so a newer converter's columns still show up.
    """
    rows: list[dict[str, Any]] = []
    gguf = meta.get("gguf")
    if isinstance(gguf, dict):
        for quant, path in gguf.items():
            rows.append({"name": str(quant), "format": "gguf", "path": path})
    exports = meta.get("exports")
    if isinstance(exports, dict):
        exports = [
            {"name": str(k), **v} if isinstance(v, dict) else {"name": str(k), "path": v}
            for k, v in exports.items()
        ]
    if isinstance(exports, list):
        for item in exports:
            if isinstance(item, dict):
                name = item.get("name") or item.get("quant") or item.get("type") or ""
                rows.append({**item, "name": str(name)})
    out: list[dict[str, Any]] = []
    seen_paths: set[str] = set()
    for row in reversed(rows):  # an `exports` row beats the plain gguf entry for a file
        path = row.get("path") or row.get("file")
        if isinstance(path, str) and path in seen_paths:
            continue
        if isinstance(path, str):
            seen_paths.add(path)
        if row.get("size") is None and row.get("bytes") is None:
            row = {**row, "size": _size(path)}
        out.append(row)
    return list(reversed(out))


def parity_rows(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The parity table: `parity` as a list or mapping, else each export's `parity`."""
    parity = meta.get("parity")
    if isinstance(parity, dict):
        return [
            {"name": str(k), **v} if isinstance(v, dict) else {"name": str(k), "value": v}
            for k, v in parity.items()
        ]
    if isinstance(parity, list):
        return [r for r in parity if isinstance(r, dict)]
    rows = []
    for row in export_rows(meta):
        p = row.get("parity")
        if isinstance(p, dict):
            rows.append({"name": row["name"], **p})
    return rows
