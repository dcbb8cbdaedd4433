"""Which files a path stands for: folders recursively, hidden entries skipped, only the
types the loaders read; anything else is reported with a reason instead of dropped."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from services.common.documents.loaders import SUPPORTED_SUFFIXES, is_supported


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


def expand(paths: Iterable[Path]) -> tuple[list[Path], list[Skipped]]:
    """Files to read (sorted, unique) and the paths that cannot be read, with why."""
    files: list[Path] = []
    problems: list[Skipped] = []
    for p in paths:
        p = p.expanduser().resolve()
        if p.is_dir():
            for root, dirs, names in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for n in sorted(names):
                    f = Path(root) / n
                    if not n.startswith(".") and is_supported(f):
                        files.append(f)
        elif p.is_file():
            if is_supported(p):
                files.append(p)
            else:
                problems.append(
                    Skipped(
                        str(p),
                        f"unsupported file type '{p.suffix}' (supported: "
                        + ", ".join(SUPPORTED_SUFFIXES)
                        + ")",
                    )
                )
        else:
            problems.append(Skipped(str(p), "no such file or folder"))
    return sorted(set(files)), problems
