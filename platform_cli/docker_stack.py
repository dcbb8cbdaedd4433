"""Docker mode: the stack as compose services (compose/compose.yml).

Orchestration goes through the compose CLI (v1 or v2, see compose_cli.py), so what the
CLI does is what a user can do by hand; the docker SDK only reads state (containers,
health, volumes), which is the same under both compose versions because both label their
containers `com.docker.compose.project/service/oneoff`.

Logical service names are the local mode's (chroma, llm, rag-api, ui): `llm` is the
ollama or llamacpp service, whichever profile is up.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from platform_cli.compose_cli import ComposeCommand, detect_compose
from platform_cli.local_stack import _port_free
from platform_cli.settings import StackSettings
from services.common.errors import ServiceUnavailable, TunestackError

ORDER = ("chroma", "llm", "rag-api", "ui")
LLM_SERVERS = ("ollama", "llamacpp")
JOB_SERVICES = ("trainer", "converter", "embed-tuner")
ALL_PROFILES = (*LLM_SERVERS, "jobs")
# compose service -> the .env variable of its published port
PORT_VARS = {
    "chroma": "TUNESTACK_CHROMA_PORT",
    "ollama": "TUNESTACK_OLLAMA_PORT",
    "llamacpp": "TUNESTACK_LLM_PORT",
    "rag-api": "TUNESTACK_API_PORT",
    "ui": "TUNESTACK_UI_PORT",
}


def tunestack_version() -> str:
    """Our images are tagged with the CLI's version, so CLI and images always match."""
    try:
        return version("tunestack")
    except PackageNotFoundError:
        return "0.1.0"


def docker_client(timeout: int = 5) -> Any:
    """A docker SDK client whose engine answered a ping, or None."""
    try:
        import docker

        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except Exception:
        return None


@dataclass
class ContainerStatus:
    name: str  # logical service name
    service: str  # compose service name
    url: str
    container: str | None
    status: str  # docker state: running, exited, ... or "absent"
    health: str | None  # healthy, starting, unhealthy, or None without a healthcheck

    @property
    def state(self) -> str:
        if self.status == "absent":
            return "stopped"
        if self.status != "running":
            return self.status
        return self.health or "running"

    @property
    def healthy(self) -> bool:
        return self.status == "running" and self.health in ("healthy", None)


class DockerStack:
    def __init__(
        self,
        s: StackSettings,
        compose: ComposeCommand | None = None,
        *,
        gpu: bool = False,
        client: Any = None,
    ) -> None:
        self.s = s
        self._compose = compose
        self.gpu = gpu
        self._client = client

    # ---- plumbing ----------------------------------------------------------------
    @property
    def compose(self) -> ComposeCommand:
        if self._compose is None:
            self._compose = detect_compose()
        return self._compose

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = docker_client()
            if self._client is None:
                raise ServiceUnavailable(
                    "docker",
                    "No Docker engine answers.",
                    hint="Start Docker (Docker Desktop, or `sudo systemctl start docker`), "
                    "or run without it: --mode local.",
                )
        return self._client

    @property
    def files(self) -> list[Path]:
        d = self.s.compose_dir
        files = [d / "compose.yml"] + ([d / "compose.gpu.yml"] if self.gpu else [])
        for f in files:
            if not f.is_file():
                raise TunestackError(
                    f"{f} is missing.", hint="Set TUNESTACK_COMPOSE_DIR to the compose/ folder."
                )
        return files

    @property
    def env_file(self) -> Path | None:
        p = Path.cwd() / ".env"
        return p if p.is_file() else None

    def env(self) -> dict[str, str]:
        """Environment of the compose process: ours, plus the image tag when unset."""
        env = dict(os.environ)
        if "TUNESTACK_VERSION" not in env and not self._env_file_sets("TUNESTACK_VERSION"):
            env["TUNESTACK_VERSION"] = tunestack_version()
        return env

    def _env_file_sets(self, key: str) -> bool:
        if self.env_file is None:
            return False
        from dotenv import dotenv_values

        return bool(dotenv_values(self.env_file).get(key))

    def argv(self, *args: str, profiles: Sequence[str] = ()) -> list[str]:
        return [
            *self.compose.args(
                project=self.s.compose_project,
                files=self.files,
                env_file=self.env_file,
                profiles=profiles,
            ),
            *args,
        ]

    def run_compose(
        self, *args: str, profiles: Sequence[str] = (), capture: bool = False, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        cmd = self.argv(*args, profiles=profiles)
        r = subprocess.run(cmd, env=self.env(), text=True, capture_output=capture)
        if check and r.returncode != 0:
            detail = "\n" + (r.stderr or "").strip()[-2000:] if capture else ""
            raise TunestackError(
                f"`{' '.join(cmd)}` failed (exit {r.returncode}).{detail}",
                hint="See the compose output above; `tunestack logs SERVICE` shows a log.",
            )
        return r

    # ---- state ---------------------------------------------------------------------
    def containers(self, include_jobs: bool = False) -> list[Any]:
        label = f"com.docker.compose.project={self.s.compose_project}"
        found = self.client.containers.list(all=True, filters={"label": label})
        if include_jobs:
            return list(found)
        return [c for c in found if c.labels.get("com.docker.compose.oneoff") != "True"]

    def is_running(self) -> bool:
        """Whether any service of this compose project is running (jobs excluded)."""
        return any(c.status == "running" for c in self.containers())

    def running_llm_server(self) -> str | None:
        for c in self.containers():
            svc = c.labels.get("com.docker.compose.service")
            if svc in LLM_SERVERS and c.status == "running":
                return str(svc)
        return None

    def url(self, name: str, llm: str | None = None) -> str:
        s = self.s
        if name == "llm":
            port = s.ollama_port if (llm or self.s.llm_server) == "ollama" else s.llm_port
            return s.url(port) + "/v1"
        return {"chroma": s.chroma_url, "rag-api": s.api_url, "ui": s.ui_url}[name]

    def status(self) -> list[ContainerStatus]:
        by_service: dict[str, Any] = {}
        for c in self.containers():
            by_service.setdefault(c.labels.get("com.docker.compose.service", ""), c)
        llm = next((n for n in LLM_SERVERS if n in by_service), self.s.llm_server)
        rows = []
        for name in ORDER:
            service = llm if name == "llm" else name
            c = by_service.get(service)
            health = None
            if c is not None:
                health = (c.attrs.get("State", {}).get("Health") or {}).get("Status")
            rows.append(
                ContainerStatus(
                    name,
                    service,
                    self.url(name, llm),
                    c.name if c is not None else None,
                    c.status if c is not None else "absent",
                    health,
                )
            )
        return rows

    # ---- operations ------------------------------------------------------------------
    def up(
        self,
        llm: str,
        on_event: Callable[[str], None],
        *,
        ui: bool = True,
        build: bool = False,
    ) -> None:
        """`compose up -d` for one LLM profile, then wait until every service is healthy."""
        if llm not in LLM_SERVERS:
            raise TunestackError(f"Unknown LLM server '{llm}'.", hint="Use ollama or llamacpp.")
        other = next(n for n in LLM_SERVERS if n != llm)
        if self.running_llm_server() == other:
            on_event(f"{other}: stopping (switching the LLM server to {llm})")
            self.run_compose("rm", "--stop", "--force", other, profiles=ALL_PROFILES)
        services = ["chroma", llm, "rag-api"] + (["ui"] if ui else [])
        if llm == "ollama":
            services.insert(2, "ollama-pull")
        self.check_ports(services)
        on_event(f"compose up ({self.compose.label}, profile {llm}{', gpu' if self.gpu else ''})")
        self.run_compose("up", "-d", *(["--build"] if build else []), *services, profiles=[llm])
        if llm == "ollama":
            on_event("ollama: making the default model available (first run pulls it)")
            self.wait_completed("ollama-pull", self.s.docker_start_timeout_s)
        for name in ORDER:
            if name == "ui" and not ui:
                continue
            service = llm if name == "llm" else name
            self.wait_healthy(service, self.s.docker_start_timeout_s)
            on_event(f"{name}: healthy at {self.url(name, llm)}")

    def port(self, service: str) -> int | None:
        s = self.s
        return {
            "chroma": s.chroma_port,
            "ollama": s.ollama_port,
            "llamacpp": s.llm_port,
            "rag-api": s.api_port,
            "ui": s.ui_port,
        }.get(service)

    def check_ports(self, services: Sequence[str]) -> None:
        """Name the port and the setting to change before compose fails with a proxy error."""
        ours = {
            c.labels.get("com.docker.compose.service")
            for c in self.containers()
            if c.status == "running"
        }
        for service in services:
            port = self.port(service)
            if port is None or service in ours or _port_free(self.s.bind, port):
                continue
            raise TunestackError(
                f"Port {port} for {service} is taken by another program.",
                hint=f"Stop that program, or set {PORT_VARS[service]}=<free port> in .env.",
            )

    def _container(self, service: str, include_jobs: bool = False) -> Any:
        for c in self.containers(include_jobs):
            if c.labels.get("com.docker.compose.service") == service:
                return c
        return None

    def wait_healthy(self, service: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state = "absent"
        while time.monotonic() < deadline:
            c = self._container(service)
            if c is not None:
                c.reload()
                health = (c.attrs.get("State", {}).get("Health") or {}).get("Status")
                state = f"{c.status}/{health}"
                if c.status == "running" and health in ("healthy", None):
                    return
                if c.status in ("exited", "dead") or health == "unhealthy":
                    break
            time.sleep(1.0)
        raise ServiceUnavailable(
            service,
            f"{service} did not become healthy within {timeout:.0f}s (state {state}).\n"
            + self.log_tail(service, 20),
            hint=f"See `tunestack logs {service}`; fix the cause and run `tunestack up` again.",
        )

    def wait_completed(self, service: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            c = self._container(service)
            if c is not None:
                c.reload()
                if c.status == "exited":
                    code = c.attrs.get("State", {}).get("ExitCode")
                    if code == 0:
                        return
                    raise ServiceUnavailable(
                        service,
                        f"{service} failed (exit {code}).\n" + self.log_tail(service, 20),
                        hint="Without internet Ollama cannot pull its model: use "
                        "`tunestack up --llm llamacpp`, which serves the bundled model.",
                    )
            time.sleep(1.0)
        raise ServiceUnavailable(
            service, f"{service} did not finish within {timeout:.0f}s.", hint=None
        )

    def log_tail(self, service: str, n: int) -> str:
        r = subprocess.run(
            self.argv("logs", "--no-color", "--tail", str(n), service, profiles=ALL_PROFILES),
            env=self.env(),
            capture_output=True,
            text=True,
        )
        return "\n".join("  | " + line for line in (r.stdout + r.stderr).splitlines()[-n:])

    def compose_service(self, name: str) -> str:
        """A logical or compose service name -> the compose service."""
        if name == "llm":
            return self.running_llm_server() or self.s.llm_server
        return name

    def logs(self, name: str, follow: bool, lines: int) -> int:
        args = ["logs", "--no-color", "--tail", str(lines)] + (["--follow"] if follow else [])
        cmd = self.argv(*args, self.compose_service(name), profiles=ALL_PROFILES)
        with contextlib.suppress(KeyboardInterrupt):
            return subprocess.run(cmd, env=self.env()).returncode
        return 130

    def down(self, volumes: bool = False) -> None:
        args = ["down", "--remove-orphans"] + (["--volumes"] if volumes else [])
        self.run_compose(*args, profiles=ALL_PROFILES)

    def run_job(self, service: str, argv: Sequence[str], cwd: Path | None = None) -> int:
        """`compose run --rm SERVICE <argv>` with the working directory mounted at its own
        path, so relative and absolute paths in argv mean the same inside the container."""
        cwd = (cwd or Path.cwd()).resolve()
        args = ["run", "--rm"]
        if not sys.stdin.isatty():
            args.append("-T")
        for host in job_mounts(argv, cwd):
            args += ["--volume", f"{host}:{host}"]
        args += ["--workdir", str(cwd), service, *argv]
        return subprocess.run(self.argv(*args, profiles=["jobs"]), env=self.env()).returncode


def job_mounts(argv: Sequence[str], cwd: Path) -> list[Path]:
    """Host folders a job needs: the working directory, and for each absolute path in
    argv outside it, that path (or the nearest existing parent of an output path)."""
    mounts = [cwd]
    for arg in argv:
        value = arg.split("=", 1)[1] if arg.startswith("--") and "=" in arg else arg
        if not value.startswith("/"):
            continue
        p = Path(value)
        while not p.exists() and p != p.parent:
            p = p.parent
        if p == Path("/") or any(p == m or m in p.parents for m in mounts):
            continue
        mounts = [m for m in mounts if p not in m.parents] + [p]
    return mounts
