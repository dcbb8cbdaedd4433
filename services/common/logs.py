"""Logging defaults: our messages at INFO, chatty libraries at WARNING."""

from __future__ import annotations

import logging
import sys

from services.common.settings import apply_library_defaults

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
    """Quiet the libraries we use, without importing any of them: transformers reads its
    verbosity from the environment when it is first imported (importing it here would add
    seconds to every CLI command); if it is already loaded, it is told directly."""
    apply_library_defaults()
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
    transformers = sys.modules.get("transformers")
    if transformers is not None:
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
