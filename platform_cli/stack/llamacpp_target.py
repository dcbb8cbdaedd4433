"""`tunestack llm deploy RUN --to llamacpp` in local mode: restart the local llama.cpp
server on the exported file, never leaving the stack without a working model.

1. The file is loaded in this process and generates a few tokens: a file llama.cpp cannot
   load is refused before the running server is touched.
2. The running server is stopped and a new one started on the same port with the new file
   and `--model_alias NAME`; it must become healthy and answer a chat completion.
3. If it does not, it is stopped and the previous command line is started again, and the
   error is reported; the RAG API was never switched, so it keeps its model.
4. TUNESTACK_HOME/run/llm-served.json remembers the file and alias, so `tunestack up`
   serves the deployed model after a restart.

The switch of the RAG API itself happens afterwards (services.converter.deploy), which
calls this through its `ServingTarget` interface.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Protocol

import httpx

from platform_cli.settings import StackSettings
from platform_cli.stack.processes import ProcSpec
from services.common import atomic
from services.common.errors import ServiceUnavailable, TunestackError
from services.common.fdcapture import capture_stderr
from services.common.records import LlmRecord
from services.common.registry import Entry
from services.converter.deploy import DeployFile, Installed, Say
from services.llm_server import LlmServerSettings

SERVED_FILE = ("run", "llm-served.json")


class LlmProcess(Protocol):
    """What the deploy needs of the local stack (local.LocalStack, which offers this
    target, so this module cannot import it)."""

    s: StackSettings

    @property
    def llm_settings(self) -> LlmServerSettings: ...

    def running_argv(self, name: str) -> list[str] | None: ...

    def spec(
        self, name: str, llm_model_path: Path | None = None, llm_alias: str | None = None
    ) -> ProcSpec: ...

    def start(self, spec: ProcSpec) -> int: ...

    def stop(self, name: str, timeout: float = 10.0) -> bool: ...

    def wait_healthy(self, spec: ProcSpec, timeout: float) -> None: ...

    def log_path(self, name: str) -> Path: ...


def served_path(home: Path) -> Path:
    return home.joinpath(*SERVED_FILE)


def served_model(s: StackSettings) -> tuple[Path, str] | None:
    """(GGUF, alias) recorded by the last llamacpp deploy, if its file still exists."""
    try:
        data = json.loads(served_path(s.home_dir).read_text(encoding="utf-8"))
        path, alias = Path(data["model_path"]), str(data["alias"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (path, alias) if path.is_file() else None


def preflight(gguf: Path, threads: int) -> str:
    """Load the file with llama.cpp here and generate a few tokens."""
    from llama_cpp import Llama

    try:
        with capture_stderr() as log:
            llm = Llama(model_path=str(gguf), n_ctx=256, n_threads=threads, verbose=False)
            out: Any = llm.create_completion("Hello", max_tokens=4, temperature=0.0)
    except Exception as e:
        raise TunestackError(
            f"llama.cpp cannot run {gguf.name}: {e}\n{log.tail()}",
            hint="Re-export the run; the running server was left as it is.",
        ) from e
    return str(out["choices"][0]["text"])


def _verify_chat(base_url: str, alias: str, timeout: float) -> str:
    r = httpx.post(
        f"{base_url}/chat/completions",
        json={
            "model": alias,
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 16,
            "temperature": 0,
        },
        timeout=timeout,
    )
    r.raise_for_status()
    return str(r.json()["choices"][0]["message"]["content"])


class LlamaCppTarget:
    """The local stack's llama.cpp server as a deploy target (see the module docstring)."""

    name = "llamacpp"

    def __init__(self, stack: LlmProcess) -> None:
        self.stack = stack

    def install(self, entry: Entry[LlmRecord], f: DeployFile, model: str, say: Say) -> Installed:
        stack, s, gguf = self.stack, self.stack.s, f.path
        say(f"  Checking that llama.cpp loads {gguf.name}...")
        preflight(gguf, stack.llm_settings.threads or 1)
        old_argv = stack.running_argv("llm")
        spec = stack.spec("llm", gguf, model)
        if old_argv is not None:
            say("  Stopping the running llama.cpp server...")
            stack.stop("llm")
        say(f"  Starting llama.cpp on {gguf.name} as '{model}'...")
        t0 = time.monotonic()
        try:
            stack.start(spec)
            stack.wait_healthy(spec, s.start_timeout_s)
            answer = _verify_chat(s.llm_url, model, s.start_timeout_s)
        except Exception as e:
            cause = e.message if isinstance(e, TunestackError) else f"{type(e).__name__}: {e}"
            restored = self._roll_back(gguf, old_argv, say)
            raise ServiceUnavailable(
                "llm",
                f"llama.cpp on {gguf.name} did not start or answer as '{model}'; {restored}."
                f"\n{cause}",
                hint=f"See {stack.log_path('llm')}.",
            ) from e
        atomic.write_text(
            served_path(s.home_dir),
            json.dumps({"model_path": str(gguf), "alias": model, "at": time.time()}),
        )
        return Installed(
            to="llamacpp",
            base_url=s.llm_url,
            response=answer,
            seconds=round(time.monotonic() - t0, 2),
            details={"file": str(gguf)},
        )

    def _roll_back(self, gguf: Path, old_argv: list[str] | None, say: Say) -> str:
        """Stop the new server; start the previous command line again, if there was one.
        Returns what happened, for the error the deploy raises."""
        stack = self.stack
        stack.stop("llm")
        if old_argv is None:
            return "no llama.cpp server was running before, and none is now"
        say("  The new server failed; restarting the previous one...")
        old = stack.spec("llm", gguf)
        old.argv = old_argv
        try:
            stack.start(old)
            stack.wait_healthy(old, stack.s.start_timeout_s)
        except TunestackError as e:
            return f"restarting the previous server failed too ({e.message}); run `tunestack up`"
        return "the previous server was restored"
