"""Trainer settings (env prefix TUNESTACK_TRAIN_).

Training hyperparameters live in the LLaMA-Factory YAML, not here; these are the knobs of
the machine and of evaluation that a YAML file should not have to carry. How many
processes train together comes from LLaMA-Factory's launcher variables (NPROC_PER_NODE,
NNODES, ...; see DataParallelSettings).
"""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from services.common.settings import CommonSettings, DataParallelSettings


class TrainSettings(CommonSettings, DataParallelSettings):
    model_config = SettingsConfigDict(
        env_prefix="TUNESTACK_TRAIN_", env_file=".env", extra="ignore", populate_by_name=True
    )

    dataset_dir: str = "data"
    """Where dataset_info.json is looked up when neither the YAML nor the CLI says."""
    threads: int | None = None
    """torch CPU threads; default: every core this process may use."""
    eval_batch_size: int = 8
    """Prompts generated together by `llm eval` (left-padded)."""
    max_new_tokens: int = 128
    """Longest generated answer in `llm eval` and `llm chat`."""
    label_only_logits: bool = True
    """Apply the output head only at trained positions (same loss, less memory/compute)."""
    progress: bool | None = None
    """Force the live progress bar on/off; default: on when stderr is a terminal."""
