"""Settings shared by every service, each defined once under one name.

Each service owns one settings class with its own env prefix (TUNESTACK_RAG_, ...) and
inherits these fields from here, read from their single names (TUNESTACK_HOME,
TUNESTACK_CHROMA_URL, OLLAMA_HOST, ...), because they are values several services must
agree on: where the registry is, where Chroma and the API answer, how documents are
chunked (the embedding tuner promises to chunk exactly as ingest does), the API key.

This module and the other `settings.py` modules are the only places that read the
process environment (a unit test greps for it): code elsewhere takes a settings object,
so what a service does never depends on a variable read somewhere in passing.

Names used before this layout (TUNESTACK_RAG_CHROMA_URL, TUNESTACK_RAG_OLLAMA_HOST, ...)
are still accepted for one release, with a deprecation warning naming the new one.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

log = logging.getLogger("tunestack.settings")

# old variable -> (field, new variable); accepted for one release (0.2), then removed.
DEPRECATED_ENV: dict[str, tuple[str, str]] = {
    "TUNESTACK_RAG_CHROMA_URL": ("chroma_url", "TUNESTACK_CHROMA_URL"),
    "TUNESTACK_RAG_OLLAMA_HOST": ("ollama_host", "OLLAMA_HOST"),
    "TUNESTACK_CONVERT_OLLAMA_HOST": ("ollama_host", "OLLAMA_HOST"),
    "TUNESTACK_RAG_LLM_MODEL": ("default_llm", "TUNESTACK_DEFAULT_LLM"),
    "TUNESTACK_RAG_CHUNK_SIZE": ("chunk_size", "TUNESTACK_CHUNK_SIZE"),
    "TUNESTACK_RAG_CHUNK_OVERLAP": ("chunk_overlap", "TUNESTACK_CHUNK_OVERLAP"),
    "TUNESTACK_EMBED_CHUNK_SIZE": ("chunk_size", "TUNESTACK_CHUNK_SIZE"),
    "TUNESTACK_EMBED_CHUNK_OVERLAP": ("chunk_overlap", "TUNESTACK_CHUNK_OVERLAP"),
    "TUNESTACK_UI_API_URL": ("api_url", "TUNESTACK_API_URL"),
}

# What chatty libraries should do in every process of ours (set only where unset).
LIBRARY_ENV_DEFAULTS = {
    "TOKENIZERS_PARALLELISM": "false",
    "ANONYMIZED_TELEMETRY": "False",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
}


class TunestackDeprecationWarning(UserWarning):
    """A setting under a name that will stop working (shown by default, unlike
    DeprecationWarning, because the person to tell is a user, not a developer)."""


def _dotenv(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    from dotenv import dotenv_values  # pydantic-settings' own dependency; rarely needed

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


class DeprecatedEnvSource(PydanticBaseSettingsSource):
    """Values from old variable names, below the new names in priority, with a warning."""

    def __init__(self, settings_cls: type[BaseSettings], env_file: Any) -> None:
        super().__init__(settings_cls)
        self.env_file = Path(env_file) if isinstance(env_file, str | Path) else None

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ does the work

    def __call__(self) -> dict[str, Any]:
        found = {**(_dotenv(self.env_file) if self.env_file else {}), **os.environ}
        out: dict[str, Any] = {}
        for old, (field, new) in DEPRECATED_ENV.items():
            if old not in found or field not in self.settings_cls.model_fields:
                continue
            if new in found or field in out:
                continue
            warnings.warn(
                f"{old} is deprecated and will be removed in the next release; set {new} instead.",
                TunestackDeprecationWarning,
                stacklevel=2,
            )
            out[field] = found[old]
        return out


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TUNESTACK_", env_file=".env", extra="ignore", populate_by_name=True
    )

    home: Path = Field(
        default=Path(".tunestack"),
        validation_alias=AliasChoices("TUNESTACK_HOME"),
        description="Artifact registry root: models, reports, chroma data, datasets.",
    )
    default_embedder: str = Field(
        default="all-minilm-l6-v2",
        validation_alias=AliasChoices("TUNESTACK_DEFAULT_EMBEDDER"),
        description="Embedder used where none is named (ingest, retrieval, the API).",
    )
    default_llm: str = Field(
        default="smollm2-135m-instruct",
        validation_alias=AliasChoices("TUNESTACK_DEFAULT_LLM"),
        description="The LLM the stack serves and the RAG chain asks for.",
    )
    embed_precision: str = Field(
        default="auto",
        validation_alias=AliasChoices("TUNESTACK_EMBED_PRECISION"),
        description="auto | fp32 | bf16: bf16 where the CPU/GPU does it natively.",
    )
    chroma_url: str = Field(
        default="http://127.0.0.1:8001",
        validation_alias=AliasChoices("TUNESTACK_CHROMA_URL"),
        description="The Chroma server (the CLI derives it from TUNESTACK_CHROMA_PORT).",
    )
    vector_store: Literal["chroma", "milvus"] = Field(
        default="chroma",
        validation_alias=AliasChoices("TUNESTACK_VECTOR_STORE"),
        description="Where collections live: chroma (one node, the default) or milvus "
        "(a Milvus cluster, standalone or milvus-lite at TUNESTACK_MILVUS_URI).",
    )
    milvus_uri: str = Field(
        default="http://127.0.0.1:19530",
        validation_alias=AliasChoices("TUNESTACK_MILVUS_URI"),
        description="The Milvus server (the CLI derives it from TUNESTACK_MILVUS_PORT).",
    )
    milvus_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("TUNESTACK_MILVUS_TOKEN"),
        description="Milvus credentials (`user:password` or an API key), if it asks.",
    )
    ollama_host: str = Field(
        default="http://127.0.0.1:11434",
        validation_alias=AliasChoices("OLLAMA_HOST"),
        description="The Ollama server deploys register models with (Ollama's own name).",
    )
    api_url: str = Field(
        default="http://127.0.0.1:8000",
        validation_alias=AliasChoices("TUNESTACK_API_URL"),
        description="Where clients (CLI, UI, deploy) find the RAG API.",
    )
    api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("TUNESTACK_API_KEY"),
        description="Bearer key of the RAG API; clients send it, the API requires it.",
    )
    queue_url: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("TUNESTACK_QUEUE_URL"),
        description="redis://[:password@]host:port/db of the job queue: the API enqueues "
        "jobs there and `tunestack worker` processes run them. Unset: jobs run in the API.",
    )
    chunk_size: int = Field(
        default=256,
        validation_alias=AliasChoices("TUNESTACK_CHUNK_SIZE"),
        description="Chunk size in embedder tokens (ingest, and the tuner's passages).",
    )
    chunk_overlap: int = Field(
        default=32,
        validation_alias=AliasChoices("TUNESTACK_CHUNK_OVERLAP"),
        description="Overlap between consecutive chunks, in embedder tokens.",
    )
    in_job_container: bool = Field(
        default=False,
        validation_alias=AliasChoices("TUNESTACK_IN_JOB_CONTAINER"),
        description="Set by compose in job containers: nothing started here outlives the job.",
    )
    hf_hub_offline: bool = Field(
        default=False,
        validation_alias=AliasChoices("HF_HUB_OFFLINE"),
        description="Never contact the Hugging Face hub (huggingface_hub's own variable).",
    )

    @field_validator("api_key", mode="before")
    @classmethod
    def _blank_key_kept(cls, v: Any) -> Any:
        # a key set to "" stays "": the API refuses to start with it (never "open"), while
        # clients treat it as no key (api_key_value); compose passes it only when set
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        deprecated = DeprecatedEnvSource(settings_cls, settings_cls.model_config.get("env_file"))
        return init_settings, env_settings, dotenv_settings, deprecated, file_secret_settings

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def api_key_value(self) -> str | None:
        """The key a client sends (None when unset or blank)."""
        key = self.api_key.get_secret_value() if self.api_key else None
        return key if key and key.strip() else None

    @property
    def api_key_configured(self) -> str | None:
        """The key exactly as configured, blank included (the API checks it at start)."""
        return self.api_key.get_secret_value() if self.api_key is not None else None


class DataParallelSettings(BaseSettings):
    """How many training processes, on how many nodes, under LLaMA-Factory's variable
    names (NPROC_PER_NODE, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT, FORCE_TORCHRUN),
    so its multi-node recipes carry over; plus what torchrun tells each worker it starts
    (WORLD_SIZE, RANK, LOCAL_RANK). Mixed into the settings of the services that train."""

    nproc_per_node: int | None = Field(
        default=None,
        ge=1,
        validation_alias=AliasChoices("NPROC_PER_NODE"),
        description="Training processes on this node; default: one per CUDA GPU (1 on CPU).",
    )
    nnodes: int = Field(default=1, ge=1, validation_alias=AliasChoices("NNODES"))
    node_rank: int = Field(default=0, ge=0, validation_alias=AliasChoices("NODE_RANK"))
    master_addr: str = Field(default="127.0.0.1", validation_alias=AliasChoices("MASTER_ADDR"))
    master_port: int | None = Field(default=None, validation_alias=AliasChoices("MASTER_PORT"))
    force_torchrun: bool = Field(
        default=False,
        validation_alias=AliasChoices("FORCE_TORCHRUN"),
        description="Launch through torchrun even for one process (as LLaMA-Factory does).",
    )
    world_size: int = Field(default=1, validation_alias=AliasChoices("WORLD_SIZE"))
    rank: int = Field(default=0, validation_alias=AliasChoices("RANK"))
    local_rank: int = Field(default=0, validation_alias=AliasChoices("LOCAL_RANK"))


def process_environ(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment plus `extra`: what a child process we start inherits
    (a child must see the same registry, offline flags and proxies as its parent)."""
    return {**os.environ, **(extra or {})}


def apply_library_defaults() -> None:
    """Quiet the libraries we load (tokenizers, telemetry, hub progress bars), unless the
    user set those variables otherwise."""
    for key, value in LIBRARY_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def named_secret(variable: str | None = None, file: str | None = None) -> SecretStr | None:
    """A key the user named by variable (`embed add --api-key-env OPENAI_API_KEY`) or by
    secret file (`--api-key-file /run/secrets/zhipu`), read when it is needed. The registry
    records only the name, so a meta.json never holds a key; read here because only
    settings modules read the environment. The variable is looked up in the environment,
    then in ./.env (like every setting)."""
    if variable:
        found = os.environ.get(variable) or _dotenv(Path(".env")).get(variable)
        if found and found.strip():
            return SecretStr(found.strip())
    if file:
        try:
            text = Path(file).expanduser().read_text(encoding="utf-8").strip()
        except OSError:
            return None
        if text:
            return SecretStr(text)
    return None
