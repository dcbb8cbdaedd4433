"""Logging defaults: our messages at INFO, chatty libraries at WARNING."""

from __future__ import annotations

import logging
import os

NOISY = (
    "httpx",
    "httpcore",
    "chromadb",
    "urllib3",
    "jieba",
    "sentence_transformers",
    "transformers",
    "llama_index",
    "openai",
    "langchain",
    "filelock",
    "fsspec",
)


def quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except Exception:
        pass
