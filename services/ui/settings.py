"""UI settings (env prefix TUNESTACK_UI_).

Where the API answers and its key are the values every client shares, inherited from
services.common.settings under their single names: TUNESTACK_API_URL (the old
TUNESTACK_UI_API_URL still works for one release, with a deprecation warning) and
TUNESTACK_API_KEY. The UI never sends that key: each person signs in with their own
(services.ui.components), or whoever opens the page would act with the UI's key.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import CommonSettings


class UiSettings(CommonSettings):
    model_config = SettingsConfigDict(
        env_prefix="TUNESTACK_UI_", env_file=".env", extra="ignore", populate_by_name=True
    )

    host: str = "127.0.0.1"
    port: int = 8501
    timeout_s: float = Field(
        default=180.0,
        description="Seconds to wait for slow API calls: a streamed answer, one file's ingest.",
    )
