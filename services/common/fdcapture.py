"""Capture what native libraries (llama.cpp, ggml) write to file descriptor 2.

Their per-tensor logs would bury our own output; we keep them in a temp file and show
the tail only when the native call fails.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager


class Captured:
    def __init__(self) -> None:
        self.text = ""

    def tail(self, n: int = 12) -> str:
        return "\n".join(self.text.splitlines()[-n:])


@contextmanager
def capture_stderr() -> Iterator[Captured]:
    out = Captured()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.text = tmp.read().decode(errors="replace")
