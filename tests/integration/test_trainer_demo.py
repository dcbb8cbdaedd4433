"""The demonstration (README "LLM fine-tuning"): LoRA SFT of smollm2-135m-instruct on the
project dataset with the example YAML; the loss falls and held-out ROUGE-L beats the
base model under identical prompts. About 10-25 minutes on 2 CPU cores: `make test-slow`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import SAMPLES
from tests.integration.test_trainer import cli

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]
DATA = SAMPLES / "llm_sft"


def test_lora_sft_beats_base_on_heldout(tmp_path: Path) -> None:
    r = cli(
        tmp_path,
        "llm",
        "train",
        "--config",
        str(DATA / "train_lora_smollm2.yaml"),
        "run_name=demo",
        "--json",
        timeout=3000,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    train = json.loads(r.stdout)
    assert train["last_logged_loss"] < 0.5 * train["first_logged_loss"], train

    scores = {}
    for model in ("smollm2-135m-instruct", "demo"):
        r = cli(
            tmp_path,
            "llm",
            "eval",
            model,
            "--dataset",
            "lumen_heldout",
            "--dataset-dir",
            str(DATA),
            "--max-new-tokens",
            "64",
            "--json",
            timeout=1800,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        scores[model] = json.loads(r.stdout)
    base, tuned = scores["smollm2-135m-instruct"], scores["demo"]
    assert tuned["num_samples"] == base["num_samples"] >= 30
    assert tuned["predict_rouge-l"] > base["predict_rouge-l"] + 10, (base, tuned)
    assert tuned["predict_bleu-4"] > base["predict_bleu-4"], (base, tuned)
