"""The embedded default: every service as a local background process.

Each process gets a pid file and a log under TUNESTACK_HOME/{run,logs}; `up` is
idempotent (healthy services are left alone), `down` stops process groups (TERM, then
KILL), and `status` reports each service's health with its URL.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from platform_cli.settings import StackSettings
from services.common.errors import ServiceUnavailable, TunestackError

ORDER = ("chroma", "llm", "rag-api", "ui")


@dataclass
class ProcSpec:
    name: str
    argv: list[str]
    port: int
    url: str
    health_path: str
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class ServiceStatus:
    name: str
    url: str
    pid: int | None
    running: bool
    healthy: bool
    log: Path

    @property
    def state(self) -> str:
        if self.healthy:
            return "healthy"
        return "starting/unhealthy" if self.running else "stopped"


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def _alive(pid: int) -> bool:
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


def _healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout).status_code < 500
    except httpx.HTTPError:
        return False


def chroma_binary() -> str:
    cand = Path(sys.executable).parent / "chroma"
    if cand.exists():
        return str(cand)
    found = shutil.which("chroma")
    if not found:
        raise TunestackError(
            "The `chroma` server command is not installed.",
            hint="Run `make setup` (installs chromadb into .venv).",
        )
    return found


class LocalStack:
    def __init__(self, s: StackSettings) -> None:
        self.s = s
        self.home = s.home_dir
        self.run_dir = self.home / "run"
        self.log_dir = self.home / "logs"

    # ---- specs ------------------------------------------------------------------
    def child_env(self) -> dict[str, str]:
        """Settings every child process shares, derived from the stack's ports."""
        s = self.s
        return {
            "TUNESTACK_HOME": str(self.home),
            "TUNESTACK_RAG_HOST": s.bind,
            "TUNESTACK_RAG_PORT": str(s.api_port),
            "TUNESTACK_RAG_CHROMA_URL": s.chroma_url,
            "TUNESTACK_RAG_LLM_BASE_URL": s.llm_url,
            "TUNESTACK_RAG_LLM_MODEL": s.default_llm,
            "TUNESTACK_UI_API_URL": s.api_url,
            "TUNESTACK_UI_PORT": str(s.ui_port),
            "TUNESTACK_UI_HOST": s.bind,
            "PYTHONUNBUFFERED": "1",
            "ANONYMIZED_TELEMETRY": "False",
        }

    def spec(
        self, name: str, llm_model_path: Path | None = None, llm_alias: str | None = None
    ) -> ProcSpec:
        s = self.s
        py = sys.executable
        if name == "chroma":
            return ProcSpec(
                name,
                [
                    chroma_binary(),
                    "run",
                    "--path",
                    str(self.home / "chroma"),
                    "--host",
                    s.bind,
                    "--port",
                    str(s.chroma_port),
                ],
                s.chroma_port,
                s.chroma_url,
                "/api/v2/heartbeat",
            )
        if name == "llm":
            if llm_model_path is None:
                raise ValueError("llm needs a model path")
            threads = s.llm_threads or os.cpu_count() or 1
            return ProcSpec(
                name,
                [
                    py,
                    "-m",
                    "llama_cpp.server",
                    "--model",
                    str(llm_model_path),
                    "--model_alias",
                    llm_alias or s.default_llm,
                    "--host",
                    s.bind,
                    "--port",
                    str(s.llm_port),
                    "--n_ctx",
                    str(s.llm_ctx),
                    "--n_threads",
                    str(threads),
                ],
                s.llm_port,
                s.llm_url,
                "/v1/models",
            )
        if name == "rag-api":
            return ProcSpec(name, [py, "-m", "services.rag_api"], s.api_port, s.api_url, "/healthz")
        if name == "ui":
            return ProcSpec(name, [py, "-m", "services.ui"], s.ui_port, s.ui_url, "/_stcore/health")
        raise TunestackError(f"Unknown service '{name}'.", hint="Services: " + ", ".join(ORDER))

    # ---- pid files ----------------------------------------------------------------
    def _pidfile(self, name: str) -> Path:
        return self.run_dir / f"{name}.json"

    def _pid(self, name: str) -> int | None:
        try:
            info = json.loads(self._pidfile(name).read_text())
            pid = int(info["pid"])
        except (OSError, ValueError, KeyError):
            return None
        return pid if _alive(pid) else None

    # ---- operations ---------------------------------------------------------------
    def status(self) -> list[ServiceStatus]:
        out = []
        for name in ORDER:
            url, health = self._urls(name)
            pid = self._pid(name)
            out.append(
                ServiceStatus(
                    name,
                    url,
                    pid,
                    pid is not None,
                    pid is not None and _healthy(url + health),
                    self.log_dir / f"{name}.log",
                )
            )
        return out

    def _urls(self, name: str) -> tuple[str, str]:
        s = self.s
        return {
            "chroma": (s.chroma_url, "/api/v2/heartbeat"),
            "llm": (s.url(s.llm_port), "/v1/models"),
            "rag-api": (s.api_url, "/healthz"),
            "ui": (s.ui_url, "/_stcore/health"),
        }[name]

    def start(self, spec: ProcSpec) -> int:
        if (pid := self._pid(spec.name)) is not None:
            return pid
        if not _port_free(self.s.bind, spec.port):
            raise TunestackError(
                f"Port {spec.port} for {spec.name} is taken by another program.",
                hint=f"Stop that program or choose another port, e.g. "
                f"TUNESTACK_{spec.name.upper().replace('-', '_').replace('RAG_API', 'API')}"
                f"_PORT=<free port> in .env.",
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{spec.name}.log").open("ab")
        env = {**os.environ, **self.child_env(), **spec.env}
        proc = subprocess.Popen(
            spec.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            cwd=str(Path.cwd()),
        )
        self._pidfile(spec.name).write_text(
            json.dumps(
                {"pid": proc.pid, "argv": spec.argv, "started": time.time(), "url": spec.url}
            )
        )
        return proc.pid

    def wait_healthy(self, spec: ProcSpec, timeout: float) -> None:
        url = spec.url.removesuffix("/v1") + spec.health_path
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _healthy(url):
                return
            if self._pid(spec.name) is None:
                break
            time.sleep(0.5)
        tail = self.log_tail(spec.name, 15)
        raise ServiceUnavailable(
            spec.name,
            f"{spec.name} did not become healthy at {url} within {timeout:.0f}s.\n{tail}",
            hint=f"See {self.log_dir / (spec.name + '.log')}; fix the cause and run "
            "`tunestack up` again.",
        )

    def log_tail(self, name: str, n: int) -> str:
        p = self.log_dir / f"{name}.log"
        try:
            lines = p.read_text(errors="replace").splitlines()[-n:]
        except OSError:
            return ""
        return "\n".join("  | " + line for line in lines)

    def up(
        self,
        services: list[str],
        on_event: Callable[[str], None],
        llm_model_path: Path | None = None,
        llm_alias: str | None = None,
    ) -> None:
        """Start in dependency waves: servers with no dependencies boot in parallel."""
        specs = {n: self.spec(n, llm_model_path, llm_alias) for n in ORDER if n in services}
        for wave in (("chroma", "llm"), ("rag-api",), ("ui",)):
            batch = [specs[n] for n in wave if n in specs]
            for spec in batch:
                was = self._pid(spec.name)
                self.start(spec)
                on_event(f"{spec.name}: {'already running' if was else 'starting'}")
            for spec in batch:
                self.wait_healthy(spec, self.s.start_timeout_s)
                on_event(f"{spec.name}: healthy at {spec.url}")

    def stop(self, name: str, timeout: float = 10.0) -> bool:
        pid = self._pid(name)
        if pid is None:
            self._pidfile(name).unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        self._pidfile(name).unlink(missing_ok=True)
        return True

    def down(self) -> list[str]:
        return [n for n in reversed(ORDER) if self.stop(n)]
