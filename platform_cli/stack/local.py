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
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from platform_cli.settings import StackSettings
from platform_cli.stack import embed_server
from platform_cli.stack.base import (
    LLAMACPP_IN_DOCKER_HINT,
    SERVICE_NAMES,
    SERVICES,
    OnEvent,
    ServiceStatus,
    UpOptions,
    ollama_embed_target,
    ollama_target,
    service_def,
    waves,
)
from platform_cli.stack.embed_server import LlamaCppEmbedTarget
from platform_cli.stack.llamacpp_target import LlamaCppTarget, served_model
from platform_cli.stack.processes import (
    ProcSpec,
    healthy,
    is_same_process,
    port_free,
    start_time,
)
from services.common.atomic import pid_alive
from services.common.errors import BadInput, ServiceUnavailable, TunestackError
from services.common.registry import Registry
from services.common.settings import process_environ
from services.converter.deploy import ServingTarget
from services.converter.embedder_gguf import EmbedTarget
from services.converter.servable import servable_gguf
from services.llm_server import LlmServerSettings, server_argv

LOOPBACK = "127.0.0.1"
PUBLISHED = ("rag-api", "ui")  # the only services TUNESTACK_BIND applies to


MILVUS = "milvus"  # the process that replaces chroma with TUNESTACK_VECTOR_STORE=milvus


def _binary(name: str, package: str) -> str:
    cand = Path(sys.executable).parent / name
    if cand.exists():
        return str(cand)
    found = shutil.which(name)
    if not found:
        raise TunestackError(
            f"The `{name}` server command is not installed.",
            hint=f"Run `make setup` (installs {package} into .venv).",
        )
    return found


def chroma_binary() -> str:
    return _binary("chroma", "chromadb")


def prepare_models(s: StackSettings, on_event: OnEvent) -> tuple[Path, str]:
    """Provision the default embedder and LLM, and pick the GGUF llama.cpp serves: the
    model `tunestack llm deploy --to llamacpp` last deployed (it survives restarts), else
    the default LLM's servable file. Returns (GGUF, the name the server answers to)."""
    registry = Registry(s.home_dir)
    on_event("preparing models (first run converts the base LLM to f16)")
    registry.ensure("embedder", s.default_embedder)
    registry.ensure("llm", s.default_llm)
    _, gguf = servable_gguf(registry, s.default_llm)
    return served_model(s) or (gguf, s.default_llm)


class LocalStack:
    mode = "local"
    detail_columns: tuple[str, ...] = ("pid", "log")

    def __init__(self, s: StackSettings) -> None:
        self.s = s
        self.home = s.home_dir
        self.run_dir = self.home / "run"
        self.log_dir = self.home / "logs"

    # ---- specs ------------------------------------------------------------------
    @property
    def llm_settings(self) -> LlmServerSettings:
        """The llama.cpp server's own settings (TUNESTACK_LLM_CTX, _THREADS, _GPU_LAYERS),
        on loopback (only the API and the UI follow TUNESTACK_BIND) and the LLM port."""
        s = self.s
        return LlmServerSettings(
            host=LOOPBACK, port=s.llm_port, home=s.home, default_llm=s.default_llm
        )

    def bind_of(self, name: str) -> str:
        """Only the API and the UI are ever reachable beyond this machine."""
        return self.s.bind if name in PUBLISHED else LOOPBACK

    def child_env(self) -> dict[str, str]:
        """Environment of every child process: ours, plus where the other services are."""
        s = self.s
        return process_environ(
            {
                "TUNESTACK_HOME": str(self.home),
                "TUNESTACK_CHROMA_URL": s.chroma_url,
                "TUNESTACK_VECTOR_STORE": s.vector_store,
                "TUNESTACK_MILVUS_URI": s.milvus_uri,
                "TUNESTACK_API_URL": s.api_url,
                "TUNESTACK_DEFAULT_LLM": s.default_llm,
                "TUNESTACK_RAG_HOST": s.bind,
                "TUNESTACK_RAG_PORT": str(s.api_port),
                "TUNESTACK_RAG_LLM_BASE_URL": s.llm_url,
                "TUNESTACK_UI_HOST": s.bind,
                "TUNESTACK_UI_PORT": str(s.ui_port),
                "PYTHONUNBUFFERED": "1",
                "ANONYMIZED_TELEMETRY": "False",
            }
        )

    def spec(
        self, name: str, llm_model_path: Path | None = None, llm_alias: str | None = None
    ) -> ProcSpec:
        s = self.s
        if name == MILVUS:  # milvus-lite's gRPC server: health is its port accepting
            port = s.milvus_port
            argv = [_binary("milvus-lite", "milvus-lite"), "server", "--data-dir"]
            argv += [str(self.home / "milvus"), "--host", LOOPBACK, "--port", str(port)]
            health = f"tcp://{LOOPBACK}:{port}"
            return ProcSpec(
                name, argv, port, s.milvus_uri, health, port_env="TUNESTACK_MILVUS_PORT"
            )
        d = service_def(name)
        py = sys.executable
        if name == "chroma":
            argv = [chroma_binary(), "run", "--path", str(self.home / "chroma")]
            argv += ["--host", LOOPBACK, "--port", str(d.port.value(s))]
        elif name == "llm":
            if llm_model_path is None:
                raise ValueError("llm needs a model path")
            argv = server_argv(self.llm_settings, llm_model_path, llm_alias)
        elif name == "rag-api":
            argv = [py, "-m", "services.rag_api"]
        else:
            argv = [py, "-m", "services.ui"]
        return ProcSpec(name, argv, d.port.value(s), d.url(s), d.health_url(s))

    # ---- pid files ----------------------------------------------------------------
    def pidfile(self, name: str) -> Path:
        return self.run_dir / f"{name}.json"

    def _record(self, name: str) -> tuple[int, dict] | None:
        """(pid, pid file) of our running `name`: None when the pid file's process is
        gone, or its pid now belongs to another process (the start time recorded with it
        differs)."""
        try:
            info = json.loads(self.pidfile(name).read_text())
            pid = int(info["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return (pid, info) if pid_alive(pid) and is_same_process(pid, info) else None

    def pid(self, name: str) -> int | None:
        found = self._record(name)
        return found[0] if found else None

    def running_argv(self, name: str) -> list[str] | None:
        """The command line of the running process `name`, to start it again later."""
        try:
            info = json.loads(self.pidfile(name).read_text())
            return list(info["argv"]) if self.pid(name) is not None else None
        except (OSError, ValueError, KeyError):
            return None

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    # ---- state --------------------------------------------------------------------
    def store_process(self) -> str:
        """The vector store's process: chroma, or milvus with TUNESTACK_VECTOR_STORE=milvus."""
        return MILVUS if self.s.vector_store == "milvus" else "chroma"

    def status(self) -> list[ServiceStatus]:
        out = []
        for d in SERVICES:
            if d.name == "chroma" and self.store_process() == MILVUS:
                spec = self.spec(MILVUS)
                out.append(self._status(MILVUS, spec.url, spec.health_url))
            else:
                out.append(self._status(d.name, d.url(self.s), d.health_url(self.s)))
        name = embed_server.NAME  # listed once `embed deploy --to llamacpp` has run
        if self.pid(name) is not None or embed_server.served(self.run_dir):
            out.append(self._status(name, *embed_server.spec_urls(self.s)))
        return out

    def _status(self, name: str, url: str, health_url: str) -> ServiceStatus:
        pid = self.pid(name)
        ok = pid is not None and healthy(health_url)
        state = "healthy" if ok else "starting/unhealthy" if pid else "stopped"
        details = {"pid": pid, "log": str(self.log_path(name))}
        return ServiceStatus(name, url, state, ok, pid is not None, details)

    def is_running(self) -> bool:
        return any(self.pid(name) is not None for name in (*SERVICE_NAMES, MILVUS))

    def log_tail(self, name: str, n: int) -> str:
        try:
            lines = self.log_path(name).read_text(errors="replace").splitlines()[-n:]
        except OSError:
            return ""
        return "\n".join("  | " + line for line in lines)

    # ---- processes ------------------------------------------------------------------
    def start(self, spec: ProcSpec) -> int:
        if (pid := self.pid(spec.name)) is not None:
            return pid
        if not port_free(self.bind_of(spec.name), spec.port):
            raise TunestackError(
                f"Port {spec.port} for {spec.name} is taken by another program.",
                hint="Stop that program or choose another port, e.g. "
                f"{spec.port_env or service_def(spec.name).port.env}=<free port> in .env.",
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path(spec.name).open("ab")
        proc = subprocess.Popen(
            spec.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**self.child_env(), **spec.env},
            start_new_session=True,
            cwd=str(Path.cwd()),
        )
        record = {
            "pid": proc.pid,
            "start_time": start_time(proc.pid),
            "argv": spec.argv,
            "started": time.time(),
            "url": spec.url,
        }
        self.pidfile(spec.name).write_text(json.dumps(record))
        return proc.pid

    def wait_healthy(self, spec: ProcSpec, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if healthy(spec.health_url):
                return
            if self.pid(spec.name) is None:
                break
            time.sleep(0.5)
        tail = self.log_tail(spec.name, 15)
        raise ServiceUnavailable(
            spec.name,
            f"{spec.name} did not become healthy at {spec.health_url} within {timeout:.0f}s."
            f"\n{tail}",
            hint=f"See {self.log_path(spec.name)}; fix the cause and run `tunestack up` again.",
        )

    def stop(self, name: str, timeout: float = 10.0) -> bool:
        """Stop our `name` (its process group: TERM, then KILL). A pid file whose pid now
        belongs to another process (ours died, the pid was reused) is only removed: that
        process, and its group, are never signalled."""
        found = self._record(name)
        if found is None:
            self.pidfile(name).unlink(missing_ok=True)
            return False
        pid, record = found

        def ours() -> bool:
            return pid_alive(pid) and is_same_process(pid, record)

        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and ours():
            time.sleep(0.2)
        if ours():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        self.pidfile(name).unlink(missing_ok=True)
        return True

    def start_services(
        self, names: Sequence[str], on_event: OnEvent, llm_model_path: Path, llm_alias: str
    ) -> None:
        """Start in dependency waves: servers with no dependencies boot in parallel."""
        for wave in waves(names):
            batch = [self.spec(d.name, llm_model_path, llm_alias) for d in wave]
            for spec in batch:
                was = self.pid(spec.name)
                self.start(spec)
                on_event(f"{spec.name}: {'already running' if was else 'starting'}")
            for spec in batch:
                self.wait_healthy(spec, self.s.start_timeout_s)
                on_event(f"{spec.name}: healthy at {spec.url}")

    # ---- the Stack interface ----------------------------------------------------------
    def up(self, options: UpOptions, on_event: OnEvent) -> None:
        if options.llm == "ollama" or options.gpu:
            raise TunestackError(
                "Local mode runs llama.cpp on the CPU; --llm ollama and --gpu need docker mode.",
                hint="Start Docker and use --mode docker, or point TUNESTACK_RAG_LLM_BASE_URL "
                "at an Ollama you run yourself (http://127.0.0.1:11434/v1).",
            )
        gguf, alias = prepare_models(self.s, on_event)
        names = [n for n in SERVICE_NAMES if options.ui or n != "ui"]
        if self.store_process() == MILVUS:
            names.remove("chroma")
            spec = self.spec(MILVUS)
            was = self.pid(MILVUS)
            self.start(spec)
            self.wait_healthy(spec, self.s.start_timeout_s)
            on_event(f"{MILVUS}: {'already running' if was else 'healthy'} at {spec.url}")
        self.start_services(names, on_event, gguf, alias)
        if embedders := embed_server.served(self.run_dir):  # `embed deploy --to llamacpp`
            was = self.pid(embed_server.NAME)
            spec = embed_server.start(self, embedders)
            on_event(f"{spec.name}: {'already running' if was else 'healthy'} at {spec.url}")

    def down(self, volumes: bool = False) -> list[str]:
        """Stop every process; `volumes` has nothing to delete here (the data in
        TUNESTACK_HOME is never deleted by `down`)."""
        names = (embed_server.NAME, *reversed(SERVICE_NAMES), MILVUS)
        return [n for n in names if self.stop(n)]

    def logs(self, service: str, follow: bool, lines: int) -> int:
        if service not in (embed_server.NAME, MILVUS):
            service_def(service)  # an unknown name is refused with the list of names
        path = self.log_path(service)
        if not path.exists():
            raise TunestackError(f"No log yet at {path}.", hint="Start the stack: tunestack up")
        if follow:
            os.execvp("tail", ["tail", "-n", str(lines), "-f", str(path)])
        sys.stdout.write(self.log_tail(service, lines) + "\n")
        return 0

    def run_job(self, service: str, argv: Sequence[str]) -> int | None:
        return None  # local mode: jobs run in this process

    def embed_target(self, kind: str) -> EmbedTarget:
        target = ollama_embed_target(self.s, kind)
        if target is not None:
            return target
        if self.s.in_job_container:  # the server would die with the job's container
            raise BadInput(
                "--to llamacpp starts a llama.cpp embedding server; this is a job container.",
                hint=LLAMACPP_IN_DOCKER_HINT,
            )
        return LlamaCppEmbedTarget(self)

    def serving_target(self, kind: str, *, adapter: bool = False) -> ServingTarget:
        target = ollama_target(self.s, kind, adapter)
        if target is not None:
            return target
        if self.s.in_job_container:
            # a llama.cpp server started here would die with the job's container
            raise BadInput(
                "--to llamacpp restarts the local llama.cpp server; this is a job container.",
                hint=LLAMACPP_IN_DOCKER_HINT,
            )
        return LlamaCppTarget(self)
