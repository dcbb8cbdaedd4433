"""Preference training of the bundled SmolLM2-135M through the `tunestack` CLI: `llm prefs`
turns evaluation rows into a ranking dataset, `llm train stage=dpo` trains on it (LoRA,
reference = adapter disabled) and registers a run that `llm chat` loads like an SFT run.

A few steps on a handful of pairs (about a minute on two cores); the held-out reward
accuracy figure is README's "Preference training" demonstration, not a test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import SAMPLES
from tests.integration.test_trainer import cli, read_jsonl

ROWS = SAMPLES / "llm_prefs" / "eval_lumen_prefs.jsonl"
CONFIG = """\
model_name_or_path: smollm2-135m-instruct
stage: dpo
finetuning_type: lora
lora_rank: 4
dataset: rag_prefs
cutoff_len: 1024
per_device_train_batch_size: 1
max_steps: 3
logging_steps: 2
save_steps: 2
learning_rate: 5.0e-4
disable_gradient_checkpointing: true
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prefs-home")


def test_prefs_then_dpo_then_chat(home: Path) -> None:
    report = home / "eval.jsonl"
    report.write_text("".join(ROWS.read_text(encoding="utf-8").splitlines(True)[:4]))
    data = home / "data"
    args = ("llm", "prefs", "--from-eval", str(report), "--out", str(data), "--json")
    r = cli(home, *args)
    assert r.returncode == 0, r.stderr[-3000:]
    made = json.loads(r.stdout)
    assert made["reasons"] == {"wrong+uncited": 4} and made["pairs"] == 4 + made["citation_pairs"]
    assert made["citation_pairs"] > 0  # the default: the right passage over a wrong one
    r = cli(home, *args, "--no-citation-pairs")  # failures only: 4 pairs, train in 3 steps
    assert r.returncode == 0 and json.loads(r.stdout)["pairs"] == 4, r.stderr[-3000:]
    assert json.loads((data / "dataset_info.json").read_text())["rag_prefs"]["ranking"] is True

    config = home / "dpo.yaml"
    config.write_text(CONFIG + f"dataset_dir: {data}\n", encoding="utf-8")
    r = cli(home, "llm", "train", "--config", str(config), "run_name=dpo", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "adapter disabled" in r.stderr and "4 training preference pairs" in r.stderr
    run = home / "models" / "llm" / "dpo"
    out = run / "adapter"
    log = read_jsonl(out / "trainer_log.jsonl")
    assert [x["current_steps"] for x in log] == [2, 3]
    assert log[0]["accuracy"] == log[0]["rewards/accuracies"] and "rewards/margins" in log[0]
    assert "loss" not in log[-1] and "reward" in log[-1]  # the final line, with step 3's rewards
    assert (out / "training_rewards_accuracies.png").is_file()
    meta = json.loads((run / "meta.json").read_text())
    assert meta["stage"] == "dpo" and meta["adapter_path"] == str(out)
    assert meta["base_model"] == "smollm2-135m-instruct" and meta["chat_format"] == "chatml"

    r = cli(home, "llm", "chat", "dpo", "-m", "Hello", "--max-new-tokens", "8")
    assert r.returncode == 0 and r.stdout.startswith("assistant> "), r.stderr[-3000:]

    # a preference set without "ranking": true says what to add
    info = json.loads((data / "dataset_info.json").read_text())
    info["rag_prefs"].pop("ranking")
    (data / "dataset_info.json").write_text(json.dumps(info))
    r = cli(home, "llm", "train", "--config", str(config), "run_name=dpo2")
    assert r.returncode == 1 and '"ranking": true' in r.stderr and "Traceback" not in r.stderr
