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

The switch of the RAG API itself happens afterwards (services.converter.deploy).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from platform_cli.local_stack import LocalStack
from platform_cli.settings import StackSettings
from services.common import atomic
from services.common.errors import ServiceUnavailable, TunestackError
from services.common.fdcapture import capture_stderr

SERVED_FILE = ("run", "llm-served.json")


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


def deploy_llamacpp(
    s: StackSettings, gguf: Path, alias: str, say: Callable[[str], None]
) -> dict[str, Any]:
    stack = LocalStack(s)
    threads = s.llm_threads or 1
    say(f"  Checking that llama.cpp loads {gguf.name}...")
    preflight(gguf, threads)
    old_argv: list[str] | None = None
    try:
        info = json.loads(stack._pidfile("llm").read_text())
        if stack._pid("llm") is not None:
            old_argv = list(info["argv"])
    except (OSError, ValueError, KeyError):
        old_argv = None
    spec = stack.spec("llm", gguf, alias)
    if old_argv is not None:
        say("  Stopping the running llama.cpp server...")
        stack.stop("llm")
    say(f"  Starting llama.cpp on {gguf.name} as '{alias}'...")
    t0 = time.monotonic()
    try:
        stack.start(spec)
        stack.wait_healthy(spec, s.start_timeout_s)
        answer = _verify_chat(s.llm_url, alias, s.start_timeout_s)
    except Exception as e:
        stack.stop("llm")
        if old_argv is not None:
            say("  The new server failed; restarting the previous one...")
            old = stack.spec("llm", gguf)
            old.argv = old_argv
            stack.start(old)
            stack.wait_healthy(old, s.start_timeout_s)
        if isinstance(e, TunestackError):
            raise
        raise ServiceUnavailable(
            "llm",
            f"llama.cpp on {gguf.name} did not answer ({type(e).__name__}: {e}); "
            "the previous server was restored.",
            hint=f"See {stack.log_dir / 'llm.log'}.",
        ) from e
    atomic.write_text(
        served_path(s.home_dir),
        json.dumps({"model_path": str(gguf), "alias": alias, "at": time.time()}),
    )
    return {
        "to": "llamacpp",
        "name": alias,
        "base_url": s.llm_url,
        "file": str(gguf),
        "verify": {"response": answer, "seconds": round(time.monotonic() - t0, 2)},
    }
