"""Shared bench plumbing: a throwaway Chroma server, timing, peak memory, medians."""

from __future__ import annotations

import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def chroma_server() -> Iterator[str]:
    from platform_cli.stack.local import chroma_binary

    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        proc = subprocess.Popen(
            [chroma_binary(), "run", "--path", d, "--host", "127.0.0.1", "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/api/v2/heartbeat")
        try:
            yield url
        finally:
            proc.terminate()
            proc.wait(10)


@contextmanager
def milvus_server() -> Iterator[str]:
    """`milvus-lite server` (Milvus's gRPC protocol) on a free port, data in a temp dir."""
    from platform_cli.stack.processes import healthy

    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        exe = Path(sys.executable).parent / "milvus-lite"
        proc = subprocess.Popen(
            [str(exe), "server", "--data-dir", d, "--host", "127.0.0.1", "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while not healthy(f"tcp://127.0.0.1:{port}") and time.monotonic() < deadline:
            time.sleep(0.2)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(10)


def redis_server(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Debian's redis-server on a free port, nothing persisted: (process, redis:// URL)."""
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        cwd=workdir,
    )
    time.sleep(0.5)
    return proc, f"redis://127.0.0.1:{port}/0"


def children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (a queue worker's job process)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return out


def wait_http(url: str, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def peak_rss_mb() -> float:
    """This process's peak RSS: /proc's VmHWM, which starts afresh at exec; ru_maxrss
    keeps the forking parent's peak across exec, so a child of a large driver would
    report the driver's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_isolated(script: Path, args: list[str]) -> dict:
    """Run one measurement in a fresh process, so peak RSS belongs to that method alone."""
    out = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def percentile(xs: list[float], p: float) -> float:
    s = sorted(xs)
    k = max(0, min(len(s) - 1, round(p / 100 * (len(s) - 1))))
    return s[k]


def xquad_paragraphs(lang: str = "en") -> list[str]:
    data = json.loads((SHARED / "xquad" / f"xquad.{lang}.json").read_text())
    return [p["context"] for a in data["data"] for p in a["paragraphs"]]


def xquad_questions(lang: str = "en") -> list[str]:
    data = json.loads((SHARED / "xquad" / f"xquad.{lang}.json").read_text())
    return [q["question"] for a in data["data"] for p in a["paragraphs"] for q in p["qas"]]


def base_embedder(home: Path | None = None) -> Any:
    """The bundled all-MiniLM-L6-v2, registered explicitly in `home` (a temp registry by
    default) and loaded the way the services load it."""
    from services.common.embedders import EmbedderPool
    from services.common.registry import Registry

    reg = Registry(home or Path(tempfile.mkdtemp()))
    reg.ensure("embedder", "all-minilm-l6-v2")
    return EmbedderPool(reg).get("all-minilm-l6-v2")


def cpu_flags() -> str:
    """The CPU features the encoder's speed depends on (bf16 autocast, VNNI int8)."""
    flags = Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0].split()
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")
    return " ".join(f for f in wanted if f in flags) or "none of avx2/avx512/amx"
