"""RAG API settings (env prefix TUNESTACK_RAG_).

Values other services share (Chroma URL, default LLM and embedder, chunking, Ollama host,
API key) are inherited from services.common.settings under their single names.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from services.common.settings import CommonSettings, _dotenv


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
    # ---- what one document may cost to read (services.common.documents.loaders) ----
    max_pdf_pages: int = Field(
        default=2000, ge=1, description="PDF pages read; the rest are left out, with a note."
    )
    max_text_chars: int = Field(
        default=20_000_000,
        ge=1,
        description="Characters of text read from one PDF or DOCX; the rest is left out.",
    )
    max_docx_unzipped_mb: int = Field(
        default=200,
        ge=1,
        description="A DOCX whose zip members expand to more than this is skipped unread.",
    )
    max_zip_ratio: float = Field(
        default=100.0,
        gt=1,
        description="A DOCX with a member (10 MB+) expanding more than this many times is "
        "skipped unread (a zip bomb).",
    )
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
    # ---- who may reach it (services.rag_api.security, .exposure) ----
    exposed_on: str | None = Field(
        default=None,
        description="The address clients reach the API on when that is not `host` (compose "
        "binds 0.0.0.0 in the container and publishes on TUNESTACK_BIND): the start-up "
        "check refuses a non-loopback address without keys.",
    )
    allowed_hosts: str = Field(
        default="",
        description="Comma-separated extra Host names the API answers to (loopback always). "
        "Without keys only these; with keys, any host when empty.",
    )
    allowed_origins: str = Field(
        default="",
        description="Comma-separated browser origins allowed to send state-changing requests.",
    )
    rate_per_minute: int = Field(default=600, ge=1, description="Requests per key per minute.")
    max_concurrent: int = Field(default=8, ge=1, description="Requests in flight per key.")
    failed_auth_per_minute: int = Field(
        default=30, ge=1, description="Wrong keys per client address per minute, then 429."
    )
    max_jobs: int = Field(
        default=16, ge=1, description="Queued + running background jobs; more is a 429."
    )
    # ---- the job queue (services.rag_api.job_queue), when TUNESTACK_QUEUE_URL is set ----
    job_retries: int = Field(
        default=2,
        ge=0,
        description="Times a job is run again after its worker died (killed, out of memory).",
    )
    job_timeout_s: int = Field(
        default=6 * 3600, ge=60, description="A queued job running longer is stopped."
    )
    worker_heartbeat_s: int = Field(
        default=10,
        ge=1,
        description="How often a worker tells the queue it is alive; a worker silent for "
        "this + worker_grace_s is dead and its job is run again elsewhere.",
    )
    worker_grace_s: int = Field(
        default=60,
        ge=1,
        description="Seconds a worker may miss its heartbeat before its job counts as "
        "abandoned (RQ's fixed 60 by default): lower means faster failover, but a worker "
        "stalled that long on a loaded machine would have its job run twice.",
    )
    worker_maintenance_s: int = Field(
        default=30, ge=1, description="How often a worker looks for jobs of dead workers."
    )
    llm_servers: str = Field(
        default="",
        description="Comma-separated extra OpenAI-compatible /v1 URLs an admin may switch the "
        "RAG chain to (the configured llm_base_url and Ollama's /v1 always may).",
    )

    teacher_api_key: SecretStr | None = Field(
        default=None,
        description="Bearer key of the teacher LLM of `tunestack llm synth` (or name another "
        "variable with --teacher-key-env).",
    )

    @staticmethod
    def _items(value: str) -> list[str]:
        return [v.strip() for v in value.split(",") if v.strip()]

    @property
    def allowed_host_names(self) -> frozenset[str]:
        return frozenset(h.lower() for h in self._items(self.allowed_hosts))

    @property
    def allowed_origin_list(self) -> frozenset[str]:
        return frozenset(o.rstrip("/") for o in self._items(self.allowed_origins))

    @property
    def llm_server_urls(self) -> list[str]:
        """Servers the switch may pick: the configured one, Ollama's, and the extra list."""
        urls = [self.llm_base_url, self.ollama_host.rstrip("/") + "/v1"]
        return list(dict.fromkeys(u.rstrip("/") for u in [*urls, *self._items(self.llm_servers)]))

    def teacher_key(self, variable: str | None = None) -> SecretStr | None:
        """The teacher's key: TUNESTACK_RAG_TEACHER_API_KEY, or the variable the user named
        (`llm synth --teacher-key-env OPENAI_API_KEY`), from the environment, then .env.
        Read here because only settings modules read the environment; it stays a SecretStr
        so it is never printed."""
        if variable is None:
            return self.teacher_api_key
        env_file = self.model_config.get("env_file")
        found = os.environ.get(variable) or (
            _dotenv(Path(env_file)).get(variable) if isinstance(env_file, str) else None
        )
        return SecretStr(found) if found else None
