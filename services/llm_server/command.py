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

from services.llm_server.settings import LlmServerSettings


def server_argv(
    s: LlmServerSettings, model_path: Path | str, alias: str | None = None
) -> list[str]:
    """llama-cpp-python's OpenAI-compatible server on `model_path`, answering to `alias`
    (default: the default LLM's name, which is what the RAG API asks for)."""
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
        str(s.threads or os.cpu_count() or 1),
        "--n_gpu_layers",
        str(s.gpu_layers),
    ]
