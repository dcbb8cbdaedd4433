"""Which stack a command talks to: docker (compose services) or local (processes).

`up --mode auto` picks docker when an engine answers and compose is installed, else
local. Every other command follows the stack that is actually running, so that a
machine with Docker can still run the local stack (and the integration tests, which
start local processes in a temp TUNESTACK_HOME, never get redirected into containers):
explicit TUNESTACK_MODE / --mode wins; then running local processes; then a running
compose project; else local.

Job commands (`llm train|eval|chat|export|deploy`, `embed synth|tune|eval`, `rag eval`,
`ingest`, `reindex`) run in the compose job containers when the stack is docker: the container's
entrypoint is this same CLI in local mode, so flags and output are identical.

`open_stack` is the only place that turns a mode into a stack; commands never branch on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from platform_cli.settings import StackSettings
from platform_cli.stack.base import Stack
from platform_cli.stack.compose import ComposeStack, docker_client
from platform_cli.stack.compose_cli import detect_compose
from platform_cli.stack.local import LocalStack
from services.common.errors import TunestackError

Mode = Literal["local", "docker"]

# command path -> compose job service
JOB_SERVICES: dict[tuple[str, ...], str] = {
    ("llm", "train"): "trainer",
    ("llm", "eval"): "trainer",
    ("llm", "chat"): "trainer",
    ("llm", "export"): "converter",
    ("llm", "deploy"): "converter",
    ("embed", "synth"): "embed-tuner",
    ("embed", "tune"): "embed-tuner",
    ("embed", "eval"): "embed-tuner",
    ("rag", "eval"): "embed-tuner",
    ("ingest",): "embed-tuner",
    ("reindex",): "embed-tuner",
    # the keys file lives in the stack's home volume, which the API reads (any job image)
    ("keys",): "converter",
}


def docker_available() -> tuple[bool, str]:
    """(usable, why not): an engine answers and a compose command exists."""
    if docker_client(timeout=3) is None:
        return False, "no Docker engine answers"
    try:
        detect_compose()
    except TunestackError as e:
        return False, e.message
    return True, ""


def resolve_up_mode(requested: str) -> Mode:
    if requested == "local":
        return "local"
    if requested not in ("auto", "docker"):
        raise TunestackError(f"Unknown mode '{requested}'.", hint="Use auto, docker or local.")
    ok, why = docker_available()
    if ok:
        return "docker"
    if requested == "docker":
        detect_compose()  # raises the install hint when compose is what is missing
        raise TunestackError(
            f"Docker mode needs a running Docker engine: {why}.",
            hint="Start Docker (Docker Desktop, or `sudo systemctl start docker`), "
            "or use --mode local.",
        )
    return "local"


def local_running(s: StackSettings) -> bool:
    return LocalStack(s).is_running()


def active_mode(s: StackSettings, requested: str | None = None) -> Mode:
    """The stack that status/down/logs and job commands address."""
    mode = requested or s.mode
    if mode in ("local", "docker"):
        return mode  # type: ignore[return-value]
    if local_running(s):
        return "local"
    client = docker_client(timeout=3)
    if client is not None and ComposeStack(s, client=client).is_running():
        return "docker"
    return "local"


def open_stack(s: StackSettings, mode: str | None = None) -> Stack:
    """The stack a command addresses: `mode` (local | docker; `up` passes what
    resolve_up_mode chose), else the running one (see active_mode)."""
    if active_mode(s, mode) == "docker":
        return ComposeStack(s)
    return LocalStack(s)


def job_service(argv: Sequence[str]) -> str | None:
    """The job service that runs this command line in docker mode, if it is a job."""
    args = [a for a in argv if a]
    if "--help" in args or "-h" in args:
        return None
    for n in (2, 1):
        svc = JOB_SERVICES.get(tuple(args[:n]))
        if svc:
            return svc
    return None


def delegate_job(argv: Sequence[str], s: StackSettings) -> int | None:
    """Run a job command where the stack runs jobs (a container in docker mode), or
    None: run it here."""
    service = job_service(argv)
    if service is None:
        return None
    return open_stack(s).run_job(service, list(argv))
