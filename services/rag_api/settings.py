"""RAG API settings (env prefix TUNESTACK_RAG_; the API key is TUNESTACK_API_KEY)."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from services.common.settings import CommonSettings


class RagSettings(CommonSettings):
    model_config = SettingsConfigDict(
        env_prefix="TUNESTACK_RAG_", env_file=".env", extra="ignore", populate_by_name=True
    )

    host: str = "127.0.0.1"
    port: int = 8000
    chroma_url: str = "http://127.0.0.1:8001"
    llm_base_url: str = Field(
        default="http://127.0.0.1:8080/v1",
        description="Any OpenAI-compatible /v1 endpoint: llama.cpp, Ollama (/v1), vLLM...",
    )
    llm_model: str = "smollm2-135m-instruct"
    llm_api_key: SecretStr = SecretStr("sk-no-key-required")
    llm_timeout_s: float = 120.0
    ollama_host: str = Field(
        default="http://127.0.0.1:11434",
        validation_alias=AliasChoices("OLLAMA_HOST", "TUNESTACK_RAG_OLLAMA_HOST"),
        description="Ollama server that POST /v1/registry/models/llm/{name}/deploy registers "
        "models with (the same variable the CLI's `llm deploy --to ollama` reads).",
    )
    api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("TUNESTACK_API_KEY"),
        description="If set, every endpoint but /healthz needs 'Authorization: Bearer <key>'.",
    )
    max_upload_mb: int = Field(default=50, description="Upper bound of one upload request.")
    max_file_mb: int = Field(default=16, description="Files larger than this are skipped.")
    chunk_size: int = Field(default=256, description="Chunk size in embedder tokens.")
    chunk_overlap: int = 32
    top_k: int = 4
    max_tokens: int = 256
    temperature: float = 0.0
    frequency_penalty: float = Field(
        default=0.5, description="Curbs the repetition loops small models fall into."
    )
    embed_batch_size: int = 64
    warm_embedder: bool = Field(
        default=True,
        description="Load the default embedder in the background at start, so the first "
        "query does not wait seconds for it (costs its memory from the start).",
    )
    workers: int = 1
