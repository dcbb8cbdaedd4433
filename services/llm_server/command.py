"""The one llama.cpp server command line, shared by the container and the local stack.

Local mode (platform_cli.stack.local) starts it as a background process on the model it
prepared; the container (`python -m services.llm_server`) execs it after preparing the
same model. Building it in one place keeps both modes on the same flags, so a model that
serves in one serves identically in the other.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from services.common.errors import TunestackError
from services.llm_server.settings import LlmServerSettings


def server_argv(
    s: LlmServerSettings, model_path: Path | str, alias: str | None = None
) -> list[str]:
    """The OpenAI-compatible server of `s.serving_engine` on `model_path`, answering to
    `alias` (default: the default LLM's name, which is what the RAG API asks for)."""
    if s.serving_engine == "llama-server":
        return llama_server_argv(s, model_path, alias)
    return [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model_path),
        "--model_alias",
        alias or s.default_llm,
        "--host",
        s.host,
        "--port",
        str(s.port),
        "--n_ctx",
        str(s.ctx),
        "--n_threads",
        _threads(s),
        "--n_gpu_layers",
        str(s.gpu_layers),
    ]


def llama_server_argv(
    s: LlmServerSettings, model_path: Path | str, alias: str | None = None
) -> list[str]:
    """llama.cpp's llama-server with `s.parallel` slots of `s.ctx` tokens each (it splits
    `-c` across the slots). Measured against llama-cpp-python's server on the bundled
    model (bench/llm_serving.py): higher aggregate tokens/s and lower p95 from 4 concurrent
    chats up, because the slots decode together instead of queueing."""
    binary = Path(s.server_binary).expanduser()
    if not binary.is_file():
        raise TunestackError(
            f"llama-server is not built: {binary} does not exist.",
            hint="Run `make llama-server` (builds it from the pinned llama.cpp source), set "
            "TUNESTACK_LLM_SERVER_BINARY to one you have, or TUNESTACK_LLM_ENGINE="
            "llama-cpp-python.",
        )
    threads = _threads(s)
    return [
        str(binary),
        "--model",
        str(model_path),
        "--alias",
        alias or s.default_llm,
        "--host",
        s.host,
        "--port",
        str(s.port),
        "--ctx-size",
        str(s.ctx * s.parallel),
        "--parallel",
        str(s.parallel),
        "--threads",
        threads,
        "--threads-batch",
        threads,
        "--n-gpu-layers",
        str(s.gpu_layers),
        "--no-webui",
        "--no-slots",  # GET /slots would show every user's prompt in flight
    ]


def embedding_server_config(
    s: LlmServerSettings, models: list[tuple[Path, str, int]]
) -> dict[str, object]:
    """llama-cpp-python's server config for embedding GGUFs, each (file, alias, window):
    one process serves every deployed embedder (it loads the one a request names), where
    llama-server would need a process per model. The context and batch are the model's
    window, so a longer text is cut as sentence-transformers cuts it."""
    return {
        "host": s.host,
        "port": s.port,
        "models": [
            {
                "model": str(path),
                "model_alias": alias,
                "embedding": True,
                "n_ctx": window,
                "n_batch": window,
                "n_ubatch": window,
                "n_threads": int(_threads(s)),
                "n_gpu_layers": 0,
                "verbose": False,
            }
            for path, alias, window in models
        ],
    }


def embedding_server_argv(config: Path) -> list[str]:
    return [sys.executable, "-m", "llama_cpp.server", "--config_file", str(config)]


def _threads(s: LlmServerSettings) -> str:
    return str(s.threads or os.cpu_count() or 1)
