"""Stack settings: where each service listens and how the stack runs (env prefix TUNESTACK_).

The URLs clients use (TUNESTACK_CHROMA_URL, TUNESTACK_API_URL, OLLAMA_HOST) are common
settings; on the machine that runs the stack they follow from the bind address and the
ports, so they are derived from those unless set explicitly (a compose job container sets
them to the services' names in the compose network).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import AliasChoices, Field, model_validator
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
    milvus_port: int = Field(
        default=19530, description="Local mode with TUNESTACK_VECTOR_STORE=milvus: milvus-lite."
    )
    llm_port: int = Field(default=8080, description="llama.cpp server (TUNESTACK_LLM_PORT).")
    ui_port: int = 8501
    embed_server_port: int = Field(
        default=8081,
        description="Local mode: the llama.cpp server of `embed deploy --to llamacpp` "
        "(loopback only).",
    )
    start_timeout_s: float = 180.0
    # docker mode (compose/compose.yml); the same .env feeds compose and these settings
    llm_server: Literal["ollama", "llamacpp", "vllm"] = Field(
        default="ollama",
        description="LLM server in docker mode (local mode runs llama.cpp); vllm needs --gpu.",
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
    image_tag: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TUNESTACK_VERSION"),
        description="Tag of our images (environment or .env); unset = this CLI's version.",
    )

    @model_validator(mode="after")
    def _derive_urls(self) -> Self:
        """Client URLs not set explicitly point at this machine's ports: the API on the bind
        address, the vector store and Ollama on loopback (they are never published beyond it)."""
        derived = {
            "chroma_url": f"http://127.0.0.1:{self.chroma_port}",
            "milvus_uri": f"http://127.0.0.1:{self.milvus_port}",
            "api_url": self.url(self.api_port),
            "ollama_host": f"http://127.0.0.1:{self.ollama_port}",
        }
        for name, url in derived.items():
            if name not in self.model_fields_set:
                # not setattr: that would mark the value as set explicitly
                self.__dict__[name] = url
        return self

    def url(self, port: int) -> str:
        host = "127.0.0.1" if self.bind in ("0.0.0.0", "::") else self.bind
        return f"http://{host}:{port}"

    @property
    def llm_url(self) -> str:
        return f"http://127.0.0.1:{self.llm_port}/v1"

    @property
    def ui_url(self) -> str:
        return self.url(self.ui_port)
