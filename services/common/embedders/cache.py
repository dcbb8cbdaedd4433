"""Vectors a remote provider already computed, by content hash.

Re-ingesting a changed document, reindexing a collection or re-running an evaluation sends
mostly the same texts again; every one is a paid, rate-limited call. One SQLite file per
embedder fingerprint maps sha256(fingerprint, prefix, text) to the float32 vector, so an
unchanged chunk costs no call. The cache is only an optimisation: a failure to read or
write it (disk full, a locked file) is logged and the provider is asked instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np

log = logging.getLogger("tunestack.embedders")


def text_key(fingerprint: str, text: str) -> bytes:
    return hashlib.sha256(f"{fingerprint}\0{text}".encode()).digest()


class VectorCache:
    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=10)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("CREATE TABLE IF NOT EXISTS vec (k BLOB PRIMARY KEY, v BLOB NOT NULL)")
            yield con
            con.commit()
        finally:
            con.close()

    def get_many(self, keys: list[bytes]) -> dict[bytes, np.ndarray]:
        out: dict[bytes, np.ndarray] = {}
        if not keys:
            return out
        try:
            with self._db() as con:
                for i in range(0, len(keys), 500):  # SQLite's parameter limit
                    part = keys[i : i + 500]
                    marks = ",".join("?" * len(part))
                    for k, v in con.execute(f"SELECT k, v FROM vec WHERE k IN ({marks})", part):
                        out[bytes(k)] = np.frombuffer(v, dtype=np.float32)
        except (sqlite3.Error, OSError) as e:
            log.warning("embedding cache %s unreadable (%s): asking the provider", self.path, e)
        return out

    def put_many(self, items: dict[bytes, np.ndarray]) -> None:
        if not items:
            return
        rows = [(k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items.items()]
        try:
            with self._db() as con:
                con.executemany("INSERT OR REPLACE INTO vec (k, v) VALUES (?, ?)", rows)
        except (sqlite3.Error, OSError) as e:
            log.warning("embedding cache %s not written (%s)", self.path, e)

    def __len__(self) -> int:
        try:
            with self._db() as con:
                return int(con.execute("SELECT COUNT(*) FROM vec").fetchone()[0])
        except (sqlite3.Error, OSError):
            return 0
