"""Local processes: what one is (ProcSpec), and whether a port, a pid or a URL answers.

Shared by the local stack, the llama.cpp deploy target, the compose stack's port check
and doctor, so none of them imports another for a helper.
"""

from __future__ import annotations

import os
import socket
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


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout).status_code < 500
    except httpx.HTTPError:
        return False
