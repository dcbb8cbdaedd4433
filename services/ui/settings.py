"""UI settings (env prefix TUNESTACK_UI_; the API key is TUNESTACK_API_KEY)."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class UiSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TUNESTACK_UI_", env_file=".env", extra="ignore", populate_by_name=True
    )

    host: str = "127.0.0.1"
    port: int = 8501
    api_url: str = "http://127.0.0.1:8000"
    api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("TUNESTACK_API_KEY")
    )
    timeout_s: float = 180.0
