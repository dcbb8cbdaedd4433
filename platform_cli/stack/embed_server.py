"""`tunestack embed deploy NAME --to llamacpp` in local mode: the local stack's llama.cpp
embedding server, which serves every deployed GGUF embedder from one process.

TUNESTACK_HOME/run/embed-served.json lists the deployed embedders (file, alias, window);
the server (llama-cpp-python's, from a config file written beside it) listens on loopback
at TUNESTACK_EMBED_SERVER_PORT and loads the model a request names. A deploy adds its model to
the list and restarts the server; if the new server does not come up and embed with the
new model, the previous list and server are restored and the error reported, so the
collections built with already deployed embedders keep working. `tunestack up` starts
the server again whenever the list is not empty; `down` stops it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import httpx

from platform_cli.settings import StackSettings
from platform_cli.stack.processes import ProcSpec
from services.common import atomic
from services.common.errors import ServiceUnavailable, TunestackError
from services.converter.embedder_gguf import Say
from services.llm_server import LlmServerSettings, embedding_server_argv, embedding_server_config

NAME = "embed"  # the process name: pid file, log, status row


@dataclass(frozen=True)
class ServedEmbedder:
    model_path: str
    alias: str
    window: int


class EmbedProcess(Protocol):
    """What the embedding server needs of the local stack (local.LocalStack)."""

    s: StackSettings
    run_dir: Path

    @property
    def llm_settings(self) -> LlmServerSettings: ...

    def start(self, spec: ProcSpec) -> int: ...

    def stop(self, name: str, timeout: float = 10.0) -> bool: ...

    def wait_healthy(self, spec: ProcSpec, timeout: float) -> None: ...

    def log_path(self, name: str) -> Path: ...


def served(run_dir: Path) -> list[ServedEmbedder]:
    """The deployed embedders whose files still exist."""
    try:
        rows = json.loads((run_dir / "embed-served.json").read_text(encoding="utf-8"))
        found = [
            ServedEmbedder(str(r["model_path"]), str(r["alias"]), int(r["window"])) for r in rows
        ]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [e for e in found if Path(e.model_path).is_file()]


def spec_urls(s: StackSettings) -> tuple[str, str]:
    """(the OpenAI-compatible base URL, the health URL) of the server, on loopback."""
    url = f"http://127.0.0.1:{s.embed_server_port}/v1"
    return url, url + "/models"


def spec(stack: EmbedProcess, models: list[ServedEmbedder]) -> ProcSpec:
    """The server on `models`; its config file is written here, beside the list."""
    s = stack.s
    settings = stack.llm_settings.model_copy(update={"port": s.embed_server_port})
    config = stack.run_dir / "embed-server.json"
    rows = [(Path(m.model_path), m.alias, m.window) for m in models]
    atomic.write_text(config, json.dumps(embedding_server_config(settings, rows)))
    url, health = spec_urls(s)
    argv = embedding_server_argv(config)
    return ProcSpec(
        NAME, argv, s.embed_server_port, url, health, port_env="TUNESTACK_EMBED_SERVER_PORT"
    )


def start(stack: EmbedProcess, models: list[ServedEmbedder]) -> ProcSpec:
    one = spec(stack, models)
    stack.start(one)
    stack.wait_healthy(one, stack.s.start_timeout_s)
    return one


def _check(url: str, alias: str, timeout: float) -> None:
    r = httpx.post(
        f"{url}/embeddings",
        json={"model": alias, "input": ["Tunestack checks this."]},
        timeout=timeout,
    )
    r.raise_for_status()
    if r.json()["model"] != alias:  # the server falls back to its first model on a typo
        raise TunestackError(f"the server answered with '{r.json()['model']}', not '{alias}'")


class LlamaCppEmbedTarget:
    """The local llama.cpp embedding server as an `embed deploy` target."""

    name = "llamacpp"
    provider = "openai-compatible"

    def __init__(self, stack: EmbedProcess) -> None:
        self.stack = stack

    def install(self, gguf: Path, sha256: str, model: str, window: int, say: Say) -> str:
        stack = self.stack
        before = served(stack.run_dir)
        after = [e for e in before if e.alias != model] + [ServedEmbedder(str(gguf), model, window)]
        say(f"Restarting the llama.cpp embedding server with '{model}' ({len(after)} model(s))...")
        stack.stop(NAME)
        try:
            one = start(stack, after)
            _check(one.url, model, stack.s.start_timeout_s)
        except Exception as e:
            cause = e.message if isinstance(e, TunestackError) else f"{type(e).__name__}: {e}"
            stack.stop(NAME)
            restored = "no embedding server was running before"
            if before:
                try:
                    start(stack, before)
                    restored = "the previous embedding server was restored"
                except TunestackError as again:
                    restored = f"restarting the previous one failed too ({again.message})"
            raise ServiceUnavailable(
                NAME,
                f"llama.cpp did not serve {gguf.name} as '{model}'; {restored}.\n{cause}",
                hint=f"See {stack.log_path(NAME)}.",
            ) from e
        atomic.write_text(
            stack.run_dir / "embed-served.json", json.dumps([asdict(e) for e in after])
        )
        return one.url
