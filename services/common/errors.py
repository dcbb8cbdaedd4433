"""Errors a user can act on.

Every failure that reaches a user carries a `hint` that says what to do next; the CLI
prints it and the API returns it in the JSON body, so nobody ever sees a traceback for
a condition we anticipated.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class TunestackError(Exception):
    """A failure with a message for humans and a hint for the next step."""

    status_code = 400

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def to_dict(self) -> dict[str, str]:
        out = {"error": type(self).__name__, "message": self.message}
        if self.hint:
            out["hint"] = self.hint
        return out

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class NotFound(TunestackError):
    status_code = 404


class BadInput(TunestackError):
    status_code = 422


class ServiceUnavailable(TunestackError):
    """A peer service (Chroma, the LLM server) is down; `service` names which."""

    status_code = 503

    def __init__(self, service: str, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.service = service

    def to_dict(self) -> dict[str, str]:
        out = super().to_dict()
        out["service"] = self.service
        return out


class UpstreamTimeout(ServiceUnavailable):
    """A peer answered too slowly (504): it is up, so "unreachable" would mislead."""

    status_code = 504


class Conflict(TunestackError):
    """The request is valid but cannot be done in the current state (the hint says how)."""

    status_code = 409


class EmbedderMismatch(Conflict):
    pass


class Busy(TunestackError):
    """Too much work queued right now; `retry_after` seconds is a fair wait (429)."""

    status_code = 429

    def __init__(self, message: str, hint: str | None = None, retry_after: int = 5) -> None:
        super().__init__(message, hint)
        self.retry_after = retry_after


# ---- a full disk --------------------------------------------------------------------------

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# How a full disk reads where no OSError carries its errno: safetensors' Rust I/O error
# ("No space left on device (os error 28)"), a child process's traceback.
DISK_FULL_TEXT = ("no space left on device", "disk quota exceeded", "[errno 28]", "[errno 122]")
# torch.save on a full disk raises a bare RuntimeError ("unexpected pos ...") and a child
# process may only say "N requested and M written": with this little room left where it
# was writing, that is the disk being full.
NEARLY_FULL_BYTES = 4 * 2**20


def shown_path(path: Path, home: Path | None) -> str:
    """`path` relative to TUNESTACK_HOME when it is under it (what a user looks for)."""
    if home is not None and path.is_relative_to(home):
        rel = path.relative_to(home).as_posix()
        return "TUNESTACK_HOME" if rel == "." else rel
    return str(path)


class DiskFull(TunestackError):
    """No space left where Tunestack writes: names the folder (relative to TUNESTACK_HOME
    when it is under it); `what` failed and `again` is how to retry once space is freed
    (a command by default; the API says "the request", a job names its command)."""

    status_code = 507

    def __init__(
        self,
        folder: Path | None = None,
        home: Path | None = None,
        *,
        what: str = "the command",
        again: str = "rerun the same command",
    ) -> None:
        self.folder, self.home, self.what, self.again = folder, home, what, again
        where = "the disk that holds TUNESTACK_HOME"
        if folder is not None:
            where = f"the folder {shown_path(folder, home)}"
        super().__init__(
            f"The disk is full: nothing more could be written to {where}; {what} was not "
            "completed.",
            hint=f"Free some space on that disk (df -h shows it), then {again}.",
        )

    def reworded(self, what: str, again: str) -> DiskFull:
        return DiskFull(self.folder, self.home, what=what, again=again)


def _chain(e: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def says_disk_full(e: BaseException) -> bool:
    """Whether `e` (or what caused it) is a full disk by its errno or its words."""
    for x in _chain(e):
        if isinstance(x, DiskFull):
            return True
        if isinstance(x, OSError) and x.errno in DISK_FULL_ERRNOS:
            return True
        if any(t in str(x).lower() for t in DISK_FULL_TEXT):
            return True
    return False


def nearly_full(folder: Path) -> bool:
    """Whether the disk that holds `folder` (or its nearest existing parent) has less than
    NEARLY_FULL_BYTES left."""
    p = folder
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free < NEARLY_FULL_BYTES
    except OSError:
        return False


def disk_full_of(
    e: BaseException, home: Path | None = None, folder: Path | None = None
) -> DiskFull | None:
    """`e` as DiskFull when it is a full disk, else None. The folder named: `e`'s own
    (a DiskFull's; an OSError's file's parent), else `folder`."""
    if isinstance(e, DiskFull):
        if e.folder is not None or folder is None:
            return e
        return DiskFull(folder, home, what=e.what, again=e.again)
    if not says_disk_full(e):
        return None
    filename = getattr(e, "filename", None)
    if isinstance(e, OSError) and isinstance(filename, str | bytes | os.PathLike):
        folder = Path(os.fsdecode(filename)).parent
    return DiskFull(folder, home)


@contextmanager
def disk_full_names(folder: Path, home: Path) -> Iterator[None]:
    """Around writes into `folder`: a full disk becomes DiskFull naming `folder` (a write()
    on a full disk carries no file name, and libraries word it their own way).

    Recognised: ENOSPC/EDQUOT anywhere in the exception's chain, the words "No space left
    on device", a DiskFull that names no folder yet, and an OSError or RuntimeError (what
    torch.save raises) while `folder`'s disk has less than NEARLY_FULL_BYTES left. Put it
    inside any cleanup that frees space (a staged folder's removal), so it looks first.
    """
    try:
        yield
    except DiskFull as e:
        if e.folder is not None:
            raise
        raise DiskFull(folder, home, what=e.what, again=e.again) from e.__cause__ or e
    except Exception as e:
        if says_disk_full(e) or (isinstance(e, OSError | RuntimeError) and nearly_full(folder)):
            raise DiskFull(folder, home) from e
        raise
