"""Locks that hold across processes: a collection's ingest lock, a run's record lock.

The API (its request threads and job worker) and the CLI (`tunestack ingest` in another
process, or in a compose job container on the same volume) write the same Chroma
collections and the same meta.json files. A threading.Lock only covers one process, so
the lock is an exclusive flock(2) on a file under TUNESTACK_HOME/run/locks: the kernel
releases it when the holder exits, even after kill -9, so a crash never leaves a stale
lock behind. flock locks belong to an open file description, so two threads of one
process that each open the file exclude each other too.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from services.common.errors import Conflict

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def lock_path(home: Path, scope: str, name: str) -> Path:
    return home / "run" / "locks" / f"{scope}-{_SAFE.sub('_', name)}.lock"


@contextmanager
def file_lock(
    path: Path,
    *,
    timeout: float | None = None,
    waiting: Callable[[], None] | None = None,
    what: str = "this resource",
) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the `with` block.

    timeout=None waits as long as it takes; otherwise Conflict after `timeout` seconds.
    `waiting` is called once if the lock is busy (to tell a user why nothing happens).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting is not None:
                waiting()
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise Conflict(
                            f"{what} is busy (another ingest, reindex or deploy holds it).",
                            hint="Wait for it to finish and try again.",
                        ) from None
                    time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def collection_lock(
    home: Path, collection: str, waiting: Callable[[], None] | None = None
) -> AbstractContextManager[None]:
    """The one lock every writer of a collection (ingest, reindex, delete) takes."""
    return file_lock(
        lock_path(home, "collection", collection),
        waiting=waiting,
        what=f"Collection '{collection}'",
    )
