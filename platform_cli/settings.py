"""Stack settings: where each service listens and how the stack runs (env prefix TUNESTACK_)."""

from __future__ import annotations

from typing import Literal

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

    def url(self, port: int) -> str:
        host = "127.0.0.1" if self.bind in ("0.0.0.0", "::") else self.bind
        return f"http://{host}:{port}"

    @property
    def api_url(self) -> str:
        return self.url(self.api_port)

    @property
    def chroma_url(self) -> str:
        return self.url(self.chroma_port)

    @property
    def llm_url(self) -> str:
        return self.url(self.llm_port) + "/v1"

    @property
    def ui_url(self) -> str:
        return self.url(self.ui_port)
