"""The export's gates failing on real files: a GGUF converted from the base in place of the
merged model, one whose tokenizer differs from the run's, and a template whose stop tokens
never fire. Each is exported by the real pipeline (llama.cpp's converter, the gates run by
llama.cpp against the merged HF model), recorded `ok: false` with the reason in meta.json,
and refused by `tunestack llm deploy` with that reason.

Each run is the session's LoRA run (tests/integration/converter_fixtures.py) under another
name, exported as q8_0 only (llama.cpp runs it faster than f16; the converter's f16 is its
source) with 2 prompts per gate and 8 reference tokens (the adapter's answer and its end
of turn), so each export costs one merge, one conversion and seconds of gating.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from services.common.records import ExportFile
from services.converter import export as export_mod
from services.converter.convert import GgufBuild
from services.converter.export import ExportRequest, ExportResult, export
from services.converter.parity import THRESHOLDS
from services.converter.settings import ConvertSettings
from tests.integration.conftest import Stack
from tests.integration.converter_fixtures import RUN, copy_run

# 8 reference tokens hold the adapter's answer and its end of turn; an answer that has not
# ended after 64 tokens (9 times its length) will not
SMALL = {"parity_prompts": 2, "parity_tokens": 8, "stop_prompts": 2, "stop_max_tokens": 64}


def _export_q8(stack: Stack, run: str) -> ExportResult:
    s = ConvertSettings(home=stack.home, **SMALL)
    return export(s, ExportRequest(run, ["q8_0"], "200MB"), say=lambda m: None)


def _recorded(stack: Stack, run: str) -> ExportFile:
    """meta.json's record of the run's q8_0 file."""
    exp = stack.registry.llm(run).record.export
    assert exp is not None
    return exp.files["q8_0"]


def _refused_by_deploy(stack: Stack, run: str, reason: str) -> None:
    """`tunestack llm deploy RUN --quant q8_0` exits non-zero with the gate's reason, and
    neither the llama.cpp server nor the RAG API changed."""
    argv = stack.local.running_argv("llm")
    before = httpx.get(f"{stack.api}/v1/admin/llm", timeout=10).json()
    p = stack.cli(
        "llm", "deploy", run, "--to", "llamacpp", "--quant", "q8_0", env={"COLUMNS": "400"}
    )
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert f"The q8_0 export of '{run}' failed its checks" in out, out
    assert reason in out and "it is not deployed" in out, out
    assert stack.local.running_argv("llm") == argv
    assert httpx.get(f"{stack.api}/v1/admin/llm", timeout=10).json() == before
    assert not stack.registry.llm(run).record.deployments


def test_gguf_of_the_base_in_place_of_the_merge_fails_parity(
    exported: dict[str, Any], stack: Stack, monkeypatch: Any
) -> None:
    """The defect: the base's weights converted where the merged model's belong. The
    merged model's answers differ from the base's, so the file fails parity."""
    registry = stack.registry
    run = "conv-nomerge"
    copy_run(registry, RUN, run)
    base_hf = Path(str(registry.llm(run).record.base_model_path))

    @dataclass
    class FromBase(GgufBuild):
        def __post_init__(self) -> None:
            self.merged = base_hf

    monkeypatch.setattr(export_mod, "GgufBuild", FromBase)
    res = _export_q8(stack, run)
    rec = _recorded(stack, run)
    par = rec.parity
    # the session's real export follows the merged model; the base's file does not, below
    # every type's threshold, and its greedy answers differ from the first token
    good = exported["record"].export.files["f16"].parity
    assert good.top1_agreement >= 0.98 and good.greedy_identical == good.prompts
    assert par.top1_agreement < min(THRESHOLDS.values()), par
    assert par.greedy_identical == 0 and par.model_extra["mean_first_divergence"] == 0, par
    assert par.tokenizer_match == "2/2" and rec.stop_check.ok  # only parity failed
    assert not par.ok and not rec.ok and not res.ok
    assert res.problems == [f"q8_0: parity {par.top1_agreement:.1%} < 90%"]
    _refused_by_deploy(stack, run, f"parity {par.top1_agreement:.1%} < 90%")


def test_gguf_whose_tokenizer_differs_from_the_runs_fails_parity(
    exported: dict[str, Any], stack: Stack
) -> None:
    """The run's tokenizer lost one merge ("Ġcap" + "ital"): the GGUF carries the base's
    tokenizer, so llama.cpp splits "capital" (in the first prompt only) unlike the HF
    tokenizer the model was run with. The weights agree; the tokenizer check fails it,
    and `tunestack llm export` exits non-zero saying so."""
    registry = stack.registry
    run = "conv-tokenizer"
    adapter = copy_run(registry, RUN, run)
    tokenizer = json.loads((adapter / "tokenizer.json").read_text(encoding="utf-8"))
    merges = tokenizer["model"]["merges"]
    kept = [m for m in merges if m not in (["Ġcap", "ital"], "Ġcap ital")]
    assert len(kept) == len(merges) - 1
    tokenizer["model"]["merges"] = kept
    (adapter / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    env = {f"TUNESTACK_CONVERT_{k.upper()}": str(v) for k, v in SMALL.items()}
    p = stack.cli(
        "llm", "export", run, "--quant", "q8_0", "--export-size", "200MB",
        env={**env, "COLUMNS": "400"},
    )  # fmt: skip
    out = p.stdout + p.stderr
    reason = "tokenizer: llama.cpp tokenizes 1/2 prompts as the HF tokenizer does"
    assert p.returncode == 1 and "Some exported files failed their checks" in out, out
    assert reason in out, out
    rec = _recorded(stack, run)
    par = rec.parity
    assert par.tokenizer_match == "1/2" and par.top1_agreement >= par.threshold, par
    assert not par.ok and rec.stop_check.ok and not rec.ok
    _refused_by_deploy(stack, run, reason)


def test_template_whose_stop_tokens_never_fire_fails_the_stop_check(
    exported: dict[str, Any], stack: Stack
) -> None:
    """The run's template is llama3, whose end of turn (<|eot_id|>) is no token of
    SmolLM2's vocabulary, and its tokenizer's end of sequence is <empty_output>, which the
    model never writes: the stop tokens are [<empty_output>] and no answer ends."""
    registry = stack.registry
    run = "conv-nostop"
    adapter = copy_run(registry, RUN, run, template="llama3")
    config = json.loads((adapter / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["eos_token"] = "<empty_output>"
    (adapter / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    res = _export_q8(stack, run)
    rec = _recorded(stack, run)
    stop = rec.stop_check
    assert stop.model_extra is not None and stop.model_extra["stop_token_ids"] == [16]
    assert stop.stopped == 0 and stop.model_extra["mean_answer_tokens"] == 64, stop
    assert rec.parity.ok  # the file is the merged model; only the stop check failed
    assert not stop.ok and not rec.ok and not res.ok
    reason = "stopped at an end-of-turn token in 0/2 prompts (< 95%)"
    assert res.problems == [f"q8_0: {reason}"]
    _refused_by_deploy(stack, run, reason)
