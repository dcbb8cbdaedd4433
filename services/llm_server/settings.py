"""LLM server settings (env prefix TUNESTACK_LLM_; the model is TUNESTACK_DEFAULT_LLM).

The only definition of the llama.cpp server's knobs: the container reads them from its
environment, and the local stack reads the same variables (its host and port come from
the stack's bind address and TUNESTACK_LLM_PORT, which is this `port`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import CommonSettings


class LlmServerSettings(CommonSettings):
    model_config = SettingsConfigDict(
        env_prefix="TUNESTACK_LLM_", env_file=".env", extra="ignore", populate_by_name=True
    )

    host: str = "127.0.0.1"
    port: int = 8080
    ctx: int = Field(default=4096, description="Context window (n_ctx).")
    threads: int | None = Field(default=None, description="CPU threads; default all cores.")
    gpu_layers: int = Field(default=0, description="Layers offloaded to a GPU (CUDA builds).")
    engine: Literal["auto", "llama-cpp-python", "llama-server"] = Field(
        default="auto",
        description="auto: llama.cpp's own llama-server where it is built (parallel slots, "
        "continuous batching; `make llama-server` builds it from the same pinned source), "
        "else llama-cpp-python's server (one request at a time); bench/llm_serving.py "
        "compares them.",
    )
    server_binary: Path = Field(
        default=Path(".cache/llama-server/bin/llama-server"),
        description="The llama-server executable (engine llama-server).",
    )
    parallel: int = Field(
        default=4,
        ge=1,
        description="llama-server slots: requests decoded together, each with `ctx` tokens "
        "(the KV cache holds parallel x ctx tokens).",
    )

    @property
    def serving_engine(self) -> Literal["llama-cpp-python", "llama-server"]:
        """The engine that serves: `engine`, with auto resolved by whether llama-server is
        built (where it is, it is the better server from one chat up: bench/README.md)."""
        if self.engine != "auto":
            return self.engine
        built = Path(self.server_binary).expanduser().is_file()
        return "llama-server" if built else "llama-cpp-python"
