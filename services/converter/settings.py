"""Converter settings (env prefix TUNESTACK_CONVERT_; Ollama's address, OLLAMA_HOST, is the
inherited CommonSettings.ollama_host).

Export quality gates and the pinned llama.cpp toolchain live here rather than in code so
that CI can shrink the prompt set and a user can point at another llama.cpp checkout
without editing anything.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import CommonSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
LLAMA_CPP_VERSION = "0.3.36"
# sha256 of llama_cpp_python-0.3.36.tar.gz; the Makefile pins the same value (a unit test
# keeps the two equal).
LLAMA_CPP_SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"


class ConvertSettings(CommonSettings):
    model_config = SettingsConfigDict(
        env_prefix="TUNESTACK_CONVERT_", env_file=".env", extra="ignore", populate_by_name=True
    )

    llama_cpp_sdist: Path = Field(
        default=REPO_ROOT / ".cache" / "sdist" / f"llama_cpp_python-{LLAMA_CPP_VERSION}.tar.gz",
        description="The pinned llama-cpp-python sdist whose vendor/llama.cpp scripts we run.",
    )
    llama_cpp_scripts: Path = Field(
        default=REPO_ROOT / ".cache" / f"llama.cpp-{LLAMA_CPP_VERSION}",
        description="Where `make setup` extracts convert_hf_to_gguf.py, conversion/, gguf-py/.",
    )
    quants: str = Field(default="f16,q8_0,q4_k_m", description="Default --quant list.")
    export_size: str = Field(default="2GB", description="Max shard size of merged/.")
    threads: int | None = Field(default=None, description="llama.cpp threads (default: all).")
    parity_prompts: int = Field(default=20, description="Prompts in the parity gate (<= 20).")
    parity_tokens: int = Field(default=32, description="Greedy tokens compared per prompt.")
    stop_prompts: int = Field(default=20, description="Prompts in the stop check (<= 20).")
    stop_max_tokens: int = Field(default=192, description="Token budget per stop-check answer.")
    deploy_timeout_s: float = Field(default=180.0, description="Server start / verify budget.")
