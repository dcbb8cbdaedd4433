"""The export's quality gates over each GGUF file: parity with the merged HF model and the
stop check (services.converter.parity has the measurements and the thresholds).

The HF side (greedy references, the stop-check prompts) is computed while the merged model
is loaded (`prepare`); the caller then drops the HF model before llama.cpp opens any file
(`check_files`), so the two never sit in memory together.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.records import ParityResult, StopCheck
from services.converter import parity
from services.converter.settings import ConvertSettings
from services.trainer.inference import LoadedLLM

Say = Callable[[str], None]


@dataclass
class GateInputs:
    """What the gates need from the HF model, computed before it is freed."""

    refs: list[parity.Reference]
    stop_prompts: list[list[int]]  # token ids of the stop check's chat prompts
    stop_ids: list[int]  # end-of-turn token ids


@dataclass
class Gated:
    """One file's gate results (the file itself is recorded at commit)."""

    quant: str
    parity: ParityResult
    stop_check: StopCheck

    @property
    def ok(self) -> bool:
        return bool(self.parity.ok and self.stop_check.ok)

    def problems(self) -> list[str]:
        """Each failed check in words (what the export prints and meta.json records)."""
        return [f"{self.quant}: {p}" for p in self.parity.problems() + self.stop_check.problems()]


def prepare(
    llm: LoadedLLM, settings: ConvertSettings, timings: dict[str, Any], say: Say
) -> GateInputs:
    """HF greedy references for the parity gate (timings["hf_reference"]) and the stop
    check's prompts, at most len(parity.PROMPTS) of each."""
    stop_ids = llm.template.stop_token_ids(llm.tokenizer)
    n_par = max(1, min(settings.parity_prompts, len(parity.PROMPTS)))
    say(f"Parity gate: {n_par} prompts x {settings.parity_tokens} greedy tokens...")
    t0 = time.monotonic()
    refs = parity.hf_references(llm, list(parity.PROMPTS[:n_par]), settings.parity_tokens, stop_ids)
    timings["hf_reference"] = round(time.monotonic() - t0, 2)
    n_stop = max(1, min(settings.stop_prompts, len(parity.PROMPTS)))
    stop_prompts = [
        llm.tokenizer(parity.chat_prompt(llm, q), add_special_tokens=False)["input_ids"]
        for q in parity.PROMPTS[:n_stop]
    ]
    return GateInputs(refs, stop_prompts, stop_ids)


def check_file(
    path: Path, quant: str, inputs: GateInputs, settings: ConvertSettings, threads: int
) -> Gated:
    par = parity.gguf_parity(path, inputs.refs, quant, threads, inputs.stop_ids)
    stop = parity.stop_check(
        path, inputs.stop_prompts, inputs.stop_ids, threads, settings.stop_max_tokens
    )
    return Gated(quant, par, stop)


def check_files(
    produced: dict[str, Path],
    quants: list[str],
    inputs: GateInputs,
    settings: ConvertSettings,
    threads: int,
    say: Say,
) -> tuple[dict[str, Gated], list[str]]:
    """Gate every produced file of a requested type; the results and the problems found."""
    gated: dict[str, Gated] = {}
    problems: list[str] = []
    for q, path in produced.items():
        if q not in quants:
            continue
        g = check_file(path, q, inputs, settings, threads)
        par, stop = g.parity, g.stop_check
        verdict = "ok" if g.ok else "NOT OK: " + "; ".join(par.problems() + stop.problems())
        say(
            f"  {q:7s} parity {par.top1_agreement:.1%} (>= {par.threshold:.0%}), "
            f"tokenizer {par.tokenizer_match}, stops {stop.stopped}/{stop.prompts} -> {verdict}"
        )
        problems += g.problems()
        gated[q] = g
    return gated, problems
