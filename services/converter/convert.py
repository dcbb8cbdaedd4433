"""HF -> GGUF with llama.cpp's own converter, then llama.cpp's quantizer; the LoRA adapter
as a GGUF LoRA (Ollama's ADAPTER). The export's "convert + quantize" and "LoRA GGUF" steps.

The converter runs in a child process (hf_to_gguf_runner): it imports the sdist's gguf-py,
which must not shadow the PyPI gguf of this process, and a converter crash must not take
the export (and its staging folder's cleanup) with it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.errors import DISK_FULL_TEXT, DiskFull, TunestackError, nearly_full
from services.common.records import LlmRecord
from services.common.registry import Entry, Registry
from services.common.settings import process_environ
from services.converter.quantize import quantize

Say = Callable[[str], None]
CONVERTER_TYPES = ("f32", "f16", "bf16")  # written by convert_hf_to_gguf.py directly


def base_entry(registry: Registry, entry: Entry[LlmRecord]) -> Entry[LlmRecord]:
    """The registry entry a run was trained from (the entry itself for a base model).

    `ensure`: exporting is an explicit command, and a bundled base that a run names but
    this registry has not provisioned yet is provisioned from its installed package.
    """
    base = entry.record.base_model
    return registry.ensure("llm", base) if base else entry


def base_gguf_of(base: Entry[LlmRecord]) -> Path | None:
    """The GGUF a run's base came from, whose tokenizer the export must carry."""
    src = base.model_path
    return src if src.is_file() and src.suffix == ".gguf" else None


def run_converter(
    scripts: Path,
    args: list[str],
    *,
    tokenizer_from: Path | None = None,
    chat_template: Path | None = None,
    script: str = "convert_hf_to_gguf.py",
    writes: Path | None = None,
) -> float:
    """llama.cpp's converter in a child process (its own sys.path: the sdist's gguf-py).

    A child that failed on a full disk (its words, or `writes`, the folder it writes to,
    left with almost no room) is DiskFull, which the export names its folder in."""
    cmd = [
        sys.executable,
        "-m",
        "services.converter.hf_to_gguf_runner",
        "--scripts",
        str(scripts),
        "--script",
        script,
    ]
    if tokenizer_from is not None:
        cmd += ["--tokenizer-from", str(tokenizer_from)]
    if chat_template is not None:
        cmd += ["--chat-template-file", str(chat_template)]
    t0 = time.monotonic()
    env = process_environ({"PYTHONUNBUFFERED": "1"})
    p = subprocess.run([*cmd, "--", *args], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        tail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-12:])
        said = any(t in tail.lower() for t in DISK_FULL_TEXT)
        if said or (writes is not None and nearly_full(writes)):
            raise DiskFull()
        hint = "See the converter's message above."
        if "sentencepiece" in tail:
            hint = "This model's converter path needs sentencepiece: pip install sentencepiece"
        raise TunestackError(f"llama.cpp's {script} failed:\n{tail}", hint=hint)
    return time.monotonic() - t0


@dataclass
class GgufBuild:
    """One merged HF folder turned into GGUF files under `out_dir` (the staging gguf/)."""

    scripts: Path
    merged: Path
    out_dir: Path
    run: str
    threads: int
    base_gguf: Path | None = None  # carry this file's tokenizer (see hf_to_gguf_runner)

    @property
    def chat_template(self) -> Path | None:
        """The run's own chat template, written next to the merged weights, which goes into
        the GGUF in place of the base file's when the tokenizer is carried."""
        f = self.merged / "chat_template.jinja"
        return f if self.base_gguf is not None and f.is_file() else None

    def path(self, quant: str) -> Path:
        return self.out_dir / f"{self.run}.{quant}.gguf"

    def convert(self, quant: str) -> float:
        """convert_hf_to_gguf.py to one of CONVERTER_TYPES; returns its seconds."""
        return run_converter(
            self.scripts,
            [str(self.merged), "--outfile", str(self.path(quant)), "--outtype", quant],
            tokenizer_from=self.base_gguf,
            chat_template=self.chat_template,
            writes=self.out_dir,
        )

    def build(self, quants: list[str], timings: dict[str, Any], say: Say) -> dict[str, Path]:
        """Convert once (the first 16/32-bit type asked for, else f16), quantize the rest
        from that file; timings["convert"] and timings["quantize"][type] in seconds.

        An f16 converted only as the quantizer's source is returned too (the caller keeps
        the types it asked for).
        """
        first = next((q for q in quants if q in CONVERTER_TYPES), "f16")
        say(
            f"Converting to GGUF {first} with llama.cpp's convert_hf_to_gguf.py"
            + (f" (tokenizer carried from {self.base_gguf.name})" if self.base_gguf else "")
            + "..."
        )
        timings["convert"] = round(self.convert(first), 2)
        produced: dict[str, Path] = {first: self.path(first)}
        timings["quantize"] = {}
        for q in quants:
            if q in produced:
                continue
            t0 = time.monotonic()
            if q in CONVERTER_TYPES:
                self.convert(q)
            else:
                say(f"Quantizing {first} -> {q} with llama.cpp...")
                quantize(produced[first], self.path(q), q, threads=self.threads)
            timings["quantize"][q] = round(time.monotonic() - t0, 2)
            produced[q] = self.path(q)
        return produced

    def lora(self, base_hf: Path, adapter: Path, timings: dict[str, Any], say: Say) -> Path:
        """The adapter as an f16 GGUF LoRA with convert_lora_to_gguf.py (Ollama's ADAPTER)."""
        say("Converting the adapter with llama.cpp's convert_lora_to_gguf.py...")
        out = self.out_dir / f"{self.run}.lora.f16.gguf"
        args = ["--base", str(base_hf), "--outfile", str(out), "--outtype", "f16", str(adapter)]
        timings["lora_gguf"] = round(
            run_converter(
                self.scripts, args, script="convert_lora_to_gguf.py", writes=self.out_dir
            ),
            2,
        )
        return out
