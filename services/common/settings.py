"""Settings shared by every service.

Each service owns one settings class with its own env prefix (TUNESTACK_RAG_, ...);
they all inherit `home` from here, read from TUNESTACK_HOME, because the artifact
registry is the one thing every service must agree on.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    )
    default_llm: str = Field(
        default="smollm2-135m-instruct",
        validation_alias=AliasChoices("TUNESTACK_DEFAULT_LLM"),
    )

    embed_precision: str = Field(
        default="auto",
        validation_alias=AliasChoices("TUNESTACK_EMBED_PRECISION"),
        description="auto | fp32 | bf16: bf16 where the CPU/GPU does it natively.",
    )

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()
