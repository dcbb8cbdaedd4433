"""Docker mode: the stack as compose services (compose/compose.yml).

Orchestration goes through the compose CLI (v1 or v2, see compose_cli.py), so what the
CLI does is what a user can do by hand; the docker SDK only reads state (containers,
health, volumes), which is the same under both compose versions because both label their
containers `com.docker.compose.project/service/oneoff`.

Logical service names are the local mode's (chroma, llm, rag-api, ui; base.SERVICES):
`llm` is the ollama or llamacpp service, whichever profile is up.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from platform_cli.settings import StackSettings
from platform_cli.stack.base import (
    LLAMACPP_IN_DOCKER_HINT,
    SERVICES,
    OnEvent,
    ServiceStatus,
    UpOptions,
    compose_port,
    ollama_embed_target,
    ollama_target,
    service_def,
)
from platform_cli.stack.compose_cli import ComposeCommand, detect_compose
from platform_cli.stack.local import LocalStack
from platform_cli.stack.processes import port_free
from services.common.errors import BadInput, ServiceUnavailable, TunestackError
from services.common.settings import process_environ
from services.converter.deploy import ServingTarget
from services.converter.embedder_gguf import EmbedTarget

LLM_SERVERS = tuple(c.name for c in service_def("llm").compose)
ALL_PROFILES = (*LLM_SERVERS, "jobs")


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


def container_status(name: str, service: str, url: str, container: Any | None) -> ServiceStatus:
    """A logical service's status from its container (None: no container).

    The state is docker's (running, exited, ...) or, while running, the healthcheck's
    (healthy, starting, unhealthy); a container without a healthcheck counts as healthy
    once it runs.
    """
    status = container.status if container is not None else "absent"
    health = None
    if container is not None:
        health = (container.attrs.get("State", {}).get("Health") or {}).get("Status")
    if status == "absent":
        state = "stopped"
    elif status != "running":
        state = status
    else:
        state = health or "running"
    return ServiceStatus(
        name,
        url,
        state,
        healthy=status == "running" and health in ("healthy", None),
        running=status == "running",
        details={
            "compose_service": service,
            "container": container.name if container is not None else None,
        },
    )


class ComposeStack:
    """The stack as compose services (see the module docstring)."""

    mode = "docker"
    detail_columns: tuple[str, ...] = ("container",)

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
        """Environment of the compose process: ours, plus the image tag when neither the
        environment nor .env sets it (a tag set there is left to compose)."""
        tag = {} if self.s.image_tag else {"TUNESTACK_VERSION": tunestack_version()}
        return process_environ(tag)

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

    def status(self) -> list[ServiceStatus]:
        by_service: dict[str, Any] = {}
        for c in self.containers():
            by_service.setdefault(c.labels.get("com.docker.compose.service", ""), c)
        llm = next((n for n in LLM_SERVERS if n in by_service), self.s.llm_server)
        rows = []
        for d in SERVICES:
            cs = d.compose_service(llm)
            rows.append(
                container_status(d.name, cs.name, d.url(self.s, cs.port), by_service.get(cs.name))
            )
        return rows

    # ---- operations ------------------------------------------------------------------
    def up(self, options: UpOptions, on_event: OnEvent) -> None:
        """`compose up -d` for one LLM profile, then wait until every service is healthy."""
        llm = options.llm or self.s.llm_server
        if llm not in LLM_SERVERS:
            raise TunestackError(
                f"Unknown LLM server '{llm}'.", hint="Use " + ", ".join(LLM_SERVERS) + "."
            )
        if llm == "vllm" and not (self.gpu or options.gpu):
            raise TunestackError(
                "vLLM serves on NVIDIA GPUs only.",
                hint="Add --gpu (needs the NVIDIA Container Toolkit), or use --llm llamacpp "
                "or ollama on a CPU.",
            )
        if LocalStack(self.s).is_running():
            raise TunestackError(
                "The local stack is running; the docker stack needs the same ports.",
                hint="Stop it first (tunestack down --mode local), or keep it: --mode local.",
            )
        self.gpu = self.gpu or options.gpu
        self._switch_llm_server(llm, on_event)
        chosen = [d for d in SERVICES if options.ui or d.name != "ui"]
        services = [d.compose_service(llm).name for d in chosen]
        if llm == "ollama":
            services.insert(services.index("ollama") + 1, "ollama-pull")
        self.check_ports(services)
        on_event(f"compose up ({self.compose.label}, profile {llm}{', gpu' if self.gpu else ''})")
        build = ["--build"] if options.build else []
        self.run_compose("up", "-d", *build, *services, profiles=[llm])
        if llm == "ollama":
            on_event("ollama: making the default model available (first run pulls it)")
            self.wait_completed("ollama-pull", self.s.docker_start_timeout_s)
        for d in chosen:
            cs = d.compose_service(llm)
            self.wait_healthy(cs.name, self.s.docker_start_timeout_s)
            on_event(f"{d.name}: healthy at {d.url(self.s, cs.port)}")

    def _switch_llm_server(self, llm: str, on_event: OnEvent) -> None:
        """Remove another running LLM server: every one answers as `llm` in the network."""
        other = self.running_llm_server()
        if other is not None and other != llm:
            on_event(f"{other}: stopping (switching the LLM server to {llm})")
            self.run_compose("rm", "--stop", "--force", other, profiles=ALL_PROFILES)

    def check_ports(self, services: Sequence[str]) -> None:
        """Name the port and the setting to change before compose fails with a proxy error."""
        ours = {
            c.labels.get("com.docker.compose.service")
            for c in self.containers()
            if c.status == "running"
        }
        for service in services:
            setting = compose_port(service)
            if setting is None or service in ours:
                continue
            port = setting.value(self.s)
            if port_free(self.s.bind, port):
                continue
            raise TunestackError(
                f"Port {port} for {service} is taken by another program.",
                hint=f"Stop that program, or set {setting.env}=<free port> in .env.",
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
        for d in SERVICES:
            if d.name == name:  # the LLM: whichever of its servers is up
                multi = len(d.compose) > 1
                server = (self.running_llm_server() or self.s.llm_server) if multi else None
                return d.compose_service(server).name
        return name

    def logs(self, service: str, follow: bool, lines: int) -> int:
        """`compose logs` of a logical service or any compose service (jobs included)."""
        args = ["logs", "--no-color", "--tail", str(lines)] + (["--follow"] if follow else [])
        cmd = self.argv(*args, self.compose_service(service), profiles=ALL_PROFILES)
        with contextlib.suppress(KeyboardInterrupt):
            return subprocess.run(cmd, env=self.env()).returncode
        return 130

    def down(self, volumes: bool = False) -> list[str]:
        """`compose down`; the services that had containers, and the deleted volumes."""
        had = [r.name for r in reversed(self.status()) if r.details["container"]]
        gone = [f"volume {v.name}" for v in self.volumes()] if volumes else []
        args = ["down", "--remove-orphans"] + (["--volumes"] if volumes else [])
        self.run_compose(*args, profiles=ALL_PROFILES)
        return had + gone

    def volumes(self) -> list[Any]:
        label = f"com.docker.compose.project={self.s.compose_project}"
        return list(self.client.volumes.list(filters={"label": label}))

    def run_job(self, service: str, argv: Sequence[str], cwd: Path | None = None) -> int | None:
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

    def embed_target(self, kind: str) -> EmbedTarget:
        target = ollama_embed_target(self.s, kind)
        if target is None:
            raise BadInput(
                "--to llamacpp runs a llama.cpp embedding server of the local stack; the "
                "stack runs in docker.",
                hint=LLAMACPP_IN_DOCKER_HINT,
            )
        return target

    def serving_target(self, kind: str, *, adapter: bool = False) -> ServingTarget:
        target = ollama_target(self.s, kind, adapter)
        if target is None:
            raise BadInput(
                "--to llamacpp restarts the local llama.cpp server; the stack runs in docker.",
                hint=LLAMACPP_IN_DOCKER_HINT,
            )
        return target


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
