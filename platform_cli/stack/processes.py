"""Local processes: what one is (ProcSpec), and whether a port, a pid or a URL answers.

Shared by the local stack, the llama.cpp deploy target, the compose stack's port check
and doctor, so none of them imports another for a helper.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field

import httpx


@dataclass
class ProcSpec:
    name: str
    argv: list[str]
    port: int
    url: str
    health_url: str
    env: dict[str, str] = field(default_factory=dict)
    port_env: str = ""  # the variable that moves it (default: its ServiceDef's)


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def start_time(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot, /proc/PID/stat field 22): with the pid,
    it names one process, never a later one that got the same pid. None off Linux."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(") ", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def cmdline(pid: int) -> list[str] | None:
    """The command line of `pid` (None if unreadable)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]] if raw else None


def is_same_process(pid: int, record: dict[str, object]) -> bool:
    """Whether the live `pid` is still the process a pid file recorded: same start time
    (recorded since it was added) or, for older records, the same command line. With no
    /proc at all (not Linux) a live pid counts as ours; on Linux a command line that stays
    unreadable means "not ours", so a stranger is never signalled."""
    recorded = record.get("start_time")
    if isinstance(recorded, int):
        now = start_time(pid)
        return now is None or now == recorded
    argv = record.get("argv")
    if not isinstance(argv, list) or not argv:
        return True
    line = cmdline(pid)
    for _ in range(50):  # empty for about a millisecond right after exec (seen on 6.18)
        if line is not None:
            break
        time.sleep(0.01)
        line = cmdline(pid)
    if line is None:
        return not os.path.isdir("/proc/self")
    want = [str(a) for a in argv]
    tail = line[-len(want) :]  # a script's interpreter comes first: `python .../chroma run`
    return (
        len(tail) == len(want)
        and tail[1:] == want[1:]
        and os.path.basename(tail[0]) == os.path.basename(want[0])
    )


def healthy(url: str, timeout: float = 2.0) -> bool:
    """An HTTP URL answers below 500; a tcp://host:port (a gRPC server) accepts."""
    if url.startswith("tcp://"):
        host, _, port = url.removeprefix("tcp://").rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=timeout):
                return True
        except OSError:
            return False
    try:
        return httpx.get(url, timeout=timeout).status_code < 500
    except httpx.HTTPError:
        return False
