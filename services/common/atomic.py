"""Atomic writes: a half-written artifact is never visible.

Everything goes to a temp sibling first and is renamed into place; rename within one
filesystem is atomic on POSIX, so readers see either the old artifact or the new one.
A folder replacing another is swapped in with one renameat2(RENAME_EXCHANGE) on Linux,
so the path never goes missing in between (elsewhere: renamed aside, then in).

Temp siblings are named `.tmp-NAME-HOST-PID-RANDOM` (`.old-...` for what was swapped
out): `sweep_stale` removes only those whose process is gone, never the work of a live
one (another export, another API worker), wherever it runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_TEMP = re.compile(r"^\.(?:tmp|old)-.*-([0-9a-f]{8})-([0-9]+)-[0-9a-f]{8}$")
# temp folders of another machine or container (another pid namespace), and unnamed
# leftovers of older versions, are old enough to be abandoned after this long
FOREIGN_STALE_S = 24 * 3600
RENAME_EXCHANGE = 2
AT_FDCWD = -100


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def _host() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def temp_sibling(final: Path, kind: str = "tmp") -> Path:
    """A temp path beside `final` that names this host and process (see sweep_stale)."""
    return final.parent / f".{kind}-{final.name}-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the
    system or the filesystem cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def swap_dir(new: Path, final: Path) -> None:
    """Put the folder `new` at `final`, replacing what is there without a moment where
    `final` is missing (one exchange; elsewhere the old one is renamed aside first)."""
    if not final.exists():
        os.replace(new, final)
        return
    if _exchange(new, final):
        old = new  # the exchange left the previous `final` at `new`'s path
    else:
        old = temp_sibling(final, "old")
        os.replace(final, old)
        os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)


def remove_dir(path: Path) -> None:
    """Delete a folder: renamed aside at once (nothing sees it half-deleted), then removed;
    a leftover of a kill meanwhile is a temp sibling that sweep_stale removes."""
    old = temp_sibling(path, "old")
    try:
        os.replace(path, old)
    except FileNotFoundError:
        return
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_dir(final: Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a temp dir beside `final`; on success rename it to `final`.

    On any exception the temp dir is removed and `final` is untouched. With
    replace=True an existing `final` is swapped out only after the new one is complete,
    in one step (swap_dir).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(final)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists() and not replace:
        shutil.rmtree(tmp, ignore_errors=True)
        raise FileExistsError(final)
    swap_dir(tmp, final)


def pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie (a zombie has finished its work)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has finished its work
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[-1][:1] != "Z"
    except OSError:
        return True


def abandoned(p: Path, now: float | None = None) -> bool:
    """Whether the temp path `p` belongs to nobody: its process (on this host) is gone;
    one of another host, or without a pid, once it is FOREIGN_STALE_S old."""
    m = _TEMP.match(p.name)
    if m and m.group(1) == _host():
        pid = int(m.group(2))
        return pid != os.getpid() and not pid_alive(pid)
    try:
        age = (now or time.time()) - p.lstat().st_mtime
    except OSError:
        return False
    return age > FOREIGN_STALE_S


def sweep_stale(parent: Path) -> list[Path]:
    """Remove temp dirs left behind by a process killed mid-write (only abandoned ones:
    another live process's work in progress is left alone). Returns what was removed."""
    if not parent.is_dir():
        return []
    gone = []
    for p in parent.iterdir():
        if p.name.startswith((".tmp-", ".old-")) and abandoned(p):
            with contextlib.suppress(OSError):
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            gone.append(p)
    return gone
