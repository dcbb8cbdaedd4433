"""Stack settings: where each service listens and how the stack runs (env prefix TUNESTACK_)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import CommonSettings


class StackSettings(CommonSettings):
    model_config = SettingsConfigDict(
        env_prefix="TUNESTACK_", env_file=".env", extra="ignore", populate_by_name=True
    )

    mode: Literal["auto", "local", "docker"] = "auto"
    bind: str = "127.0.0.1"
    api_port: int = 8000
    chroma_port: int = 8001
    llm_port: int = 8080
    ui_port: int = 8501
    llm_ctx: int = 4096
    llm_threads: int | None = None
    start_timeout_s: float = 180.0
    # docker mode (compose/compose.yml); the same .env feeds compose and these settings
    llm_server: Literal["ollama", "llamacpp"] = Field(
        default="ollama", description="LLM server in docker mode (local mode runs llama.cpp)."
    )
    ollama_port: int = 11434
    compose_project: str = Field(
        default="tunestack",
        validation_alias=AliasChoices("COMPOSE_PROJECT_NAME", "TUNESTACK_COMPOSE_PROJECT"),
    )
    compose_dir: Path = Field(
        default=Path(__file__).resolve().parent.parent / "compose",
        description="Folder with compose.yml and compose.gpu.yml.",
    )
    docker_start_timeout_s: float = Field(
        default=600.0, description="Docker mode: first starts pull models and fill volumes."
    )
    chroma_url_override: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TUNESTACK_CHROMA_URL"),
        description="Where the CLI finds Chroma when not at bind:chroma_port (job containers).",
    )

    def url(self, port: int) -> str:
        host = "127.0.0.1" if self.bind in ("0.0.0.0", "::") else self.bind
        return f"http://{host}:{port}"

    @property
    def api_url(self) -> str:
        return self.url(self.api_port)

    @property
    def chroma_url(self) -> str:
        return self.chroma_url_override or self.url(self.chroma_port)

    @property
    def llm_url(self) -> str:
        return self.url(self.llm_port) + "/v1"

    @property
    def ui_url(self) -> str:
        return self.url(self.ui_port)
