"""The llama.cpp LLM server: its settings and its one command line (container and local
stack alike); `python -m services.llm_server` provisions the servable GGUF and serves it."""

from services.llm_server.command import (
    embedding_server_argv,
    embedding_server_config,
    server_argv,
)
from services.llm_server.settings import LlmServerSettings

__all__ = [
    "LlmServerSettings",
    "embedding_server_argv",
    "embedding_server_config",
    "server_argv",
]
