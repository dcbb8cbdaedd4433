"""LLM server settings (env prefix TUNESTACK_LLM_; the model is TUNESTACK_DEFAULT_LLM).

The only definition of the llama.cpp server's knobs: the container reads them from its
environment, and the local stack reads the same variables (its host and port come from
the stack's bind address and TUNESTACK_LLM_PORT, which is this `port`).
"""

from __future__ import annotations

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
