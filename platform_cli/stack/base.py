"""What every stack is, whichever way it runs: the services, their status, the interface.

Local processes (local.py) and compose services (compose.py) run the same four logical
services; SERVICES is the one place that says which port setting, port variable, health
path and start wave each has, and which compose services provide it, so the two stacks,
doctor and the messages that name a variable cannot disagree. The commands talk to a
`Stack` and never ask which mode runs it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from platform_cli.settings import StackSettings
from services.common.errors import BadInput, TunestackError
from services.converter.deploy import OllamaTarget, ServingTarget
from services.converter.embedder_gguf import EmbedTarget, OllamaEmbedTarget

OnEvent = Callable[[str], None]

# Why a llama.cpp deploy cannot happen here (compose stack, compose job container).
LLAMACPP_IN_DOCKER_HINT = (
    "In docker mode deploy with --to ollama, or run the stack with --mode local."
)


@dataclass(frozen=True)
class PortSetting:
    """A published port: its StackSettings attribute and the variable that sets it."""

    attr: str
    env: str

    def value(self, s: StackSettings) -> int:
        return int(getattr(s, self.attr))


@dataclass(frozen=True)
class ComposeService:
    """A compose service that provides a logical service, and its published port."""

    name: str
    port: PortSetting


@dataclass(frozen=True)
class ServiceDef:
    name: str  # logical name: chroma | llm | rag-api | ui
    port: PortSetting  # where the local stack runs it (compose: see `compose`)
    health_path: str
    wave: int  # start order: a wave starts once the one before is healthy
    compose: tuple[ComposeService, ...]  # the first is the default
    url_suffix: str = ""  # what clients append (the LLM's OpenAI-compatible /v1)

    def compose_service(self, server: str | None = None) -> ComposeService:
        """The compose service that provides this one (`server` picks the LLM server)."""
        return next((c for c in self.compose if c.name == server), self.compose[0])

    def url(self, s: StackSettings, port: PortSetting | None = None) -> str:
        return s.url((port or self.port).value(s)) + self.url_suffix

    def health_url(self, s: StackSettings, port: PortSetting | None = None) -> str:
        return s.url((port or self.port).value(s)) + self.health_path


_CHROMA = PortSetting("chroma_port", "TUNESTACK_CHROMA_PORT")
_LLAMACPP = PortSetting("llm_port", "TUNESTACK_LLM_PORT")
_OLLAMA = PortSetting("ollama_port", "TUNESTACK_OLLAMA_PORT")
_API = PortSetting("api_port", "TUNESTACK_API_PORT")
_UI = PortSetting("ui_port", "TUNESTACK_UI_PORT")

SERVICES: tuple[ServiceDef, ...] = (
    ServiceDef("chroma", _CHROMA, "/api/v2/heartbeat", 0, (ComposeService("chroma", _CHROMA),)),
    ServiceDef(
        "llm",
        _LLAMACPP,
        "/v1/models",
        0,
        (
            ComposeService("ollama", _OLLAMA),
            ComposeService("llamacpp", _LLAMACPP),
            ComposeService("vllm", _LLAMACPP),
        ),
        url_suffix="/v1",
    ),
    ServiceDef("rag-api", _API, "/healthz", 1, (ComposeService("rag-api", _API),)),
    ServiceDef("ui", _UI, "/_stcore/health", 2, (ComposeService("ui", _UI),)),
)
SERVICE_NAMES: tuple[str, ...] = tuple(d.name for d in SERVICES)


def service_def(name: str) -> ServiceDef:
    for d in SERVICES:
        if d.name == name:
            return d
    raise TunestackError(f"Unknown service '{name}'.", hint="One of: " + ", ".join(SERVICE_NAMES))


def compose_port(compose_service: str) -> PortSetting | None:
    """The published port of a compose service; None for one that publishes none."""
    for d in SERVICES:
        for c in d.compose:
            if c.name == compose_service:
                return c.port
    return None


def waves(names: Sequence[str]) -> list[list[ServiceDef]]:
    """`names` grouped by start wave, in order: each wave's services start together."""
    chosen = [d for d in SERVICES if d.name in names]
    return [[d for d in chosen if d.wave == w] for w in sorted({d.wave for d in chosen})]


@dataclass
class ServiceStatus:
    """One service's state in either mode; `details` holds what only one mode has
    (local: pid, log; docker: compose_service, container)."""

    name: str
    url: str
    state: str  # healthy, starting/unhealthy, stopped, or a docker state
    healthy: bool
    running: bool
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class UpOptions:
    llm: str | None = None  # docker mode LLM server: ollama | llamacpp | vllm (default: settings)
    gpu: bool = False
    build: bool = False
    ui: bool = True


class Stack(Protocol):
    """The stack `tunestack up|down|status|logs` and job commands address."""

    mode: str  # "local" | "docker"
    # status columns beyond service/state/url, each a key of ServiceStatus.details
    detail_columns: tuple[str, ...]

    def up(self, options: UpOptions, on_event: OnEvent) -> None:
        """Start every service (idempotent) and return once all are healthy."""
        ...

    def down(self, volumes: bool = False) -> list[str]:
        """Stop the stack; the names of what was stopped (and deleted)."""
        ...

    def status(self) -> list[ServiceStatus]: ...

    def logs(self, service: str, follow: bool, lines: int) -> int:
        """Print a service's log to stdout; the exit code."""
        ...

    def run_job(self, service: str, argv: Sequence[str]) -> int | None:
        """Run a CLI job command where jobs run (its exit code), or None: run it here."""
        ...

    def serving_target(self, kind: str, *, adapter: bool = False) -> ServingTarget:
        """What `tunestack llm deploy --to KIND` installs a model on (ollama | llamacpp)."""
        ...

    def embed_target(self, kind: str) -> EmbedTarget:
        """What `tunestack embed deploy --to KIND` serves a GGUF embedder on."""
        ...


def ollama_target(s: StackSettings, kind: str, adapter: bool) -> ServingTarget | None:
    """Ollama, which both modes deploy to the same way (at OLLAMA_HOST); None for
    llamacpp, which each mode answers itself; an unknown kind is refused."""
    if kind == "ollama":
        return OllamaTarget(s.ollama_host, adapter=adapter)
    if kind != "llamacpp":
        raise BadInput(f"--to {kind}: use ollama or llamacpp.")
    return None


def ollama_embed_target(s: StackSettings, kind: str) -> EmbedTarget | None:
    """Ollama for `embed deploy` in both modes; None for llamacpp, which only the local
    stack runs; an unknown kind is refused."""
    if kind == "ollama":
        return OllamaEmbedTarget(s.ollama_host)
    if kind != "llamacpp":
        raise BadInput(f"--to {kind}: use ollama or llamacpp.")
    return None
