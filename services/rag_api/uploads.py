"""Safe storage of uploaded files: sanitized names, size limits, no path traversal."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import unicodedata
from pathlib import Path
from typing import BinaryIO

from services.common.errors import BadInput, TunestackError

_UNSAFE = re.compile(r"[^\w.\- ()\[\]]+", re.UNICODE)


class TooLarge(TunestackError):
    status_code = 413


def sanitize_filename(name: str) -> str:
    """Reduce a client-supplied name to a plain file name (no dirs, no dot-files)."""
    name = unicodedata.normalize("NFC", name or "").replace("\\", "/").split("/")[-1]
    name = _UNSAFE.sub("_", name).strip(" .")
    name = name.lstrip(".-") or "upload"
    stem, dot, ext = name.rpartition(".")
    if len(name) > 150:
        name = (stem[: 140 - len(ext)] + dot + ext) if dot else name[:150]
    return name


def unique_names(names: list[str]) -> list[str]:
    """Sanitized names, one per upload: a name that comes twice in one request (two
    folders' `notes.md`, or names equal once sanitized) gets ` (2)`, ` (3)`... so every
    part is kept instead of the last overwriting the others."""
    seen: set[str] = set()
    out: list[str] = []
    for raw in names:
        name = sanitize_filename(raw)
        stem, dot, ext = name.rpartition(".") if "." in name else (name, "", "")
        n = 1
        while name in seen:
            n += 1
            name = sanitize_filename(f"{stem[: 140 - len(ext)]} ({n}){dot}{ext}")
        seen.add(name)
        out.append(name)
    return out


def save_upload(src: BinaryIO, filename: str, dest_dir: Path, limit_bytes: int) -> Path:
    """Copy an upload into dest_dir under a sanitized name, atomically, within a size limit."""
    safe = sanitize_filename(filename)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = (dest_dir / safe).resolve()
    if dest.parent != dest_dir.resolve():
        raise BadInput(f"Refused file name '{filename}'.", hint="Use a plain file name.")
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=".upload-")
    written = 0
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(1 << 20):
                written += len(chunk)
                if written > limit_bytes:
                    raise TooLarge(
                        f"'{safe}' is larger than the {limit_bytes // 2**20} MB upload limit.",
                        hint="Raise TUNESTACK_RAG_MAX_UPLOAD_MB or ingest it with the CLI.",
                    )
                out.write(chunk)
        if shutil.disk_usage(dest_dir).free < 64 * 2**20:
            raise TunestackError(
                "The disk is almost full; the upload was not stored.",
                hint="Free some space and upload again.",
            )
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest
