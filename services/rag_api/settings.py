"""RAG API settings (env prefix TUNESTACK_RAG_).

Values other services share (Chroma URL, default LLM and embedder, chunking, Ollama host,
API key) are inherited from services.common.settings under their single names.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from services.common.settings import CommonSettings


class RagSettings(CommonSettings):
    model_config = SettingsConfigDict(
        env_prefix="TUNESTACK_RAG_", env_file=".env", extra="ignore", populate_by_name=True
    )

    host: str = "127.0.0.1"
    port: int = 8000
    llm_base_url: str = Field(
        default="http://127.0.0.1:8080/v1",
        description="Any OpenAI-compatible /v1 endpoint: llama.cpp, Ollama (/v1), vLLM...",
    )
    llm_api_key: SecretStr = SecretStr("sk-no-key-required")
    llm_timeout_s: float = 120.0
    max_upload_mb: int = Field(default=50, description="Upper bound of one upload request.")
    max_file_mb: int = Field(default=16, description="Files larger than this are skipped.")
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
