"""Real LoRA training of the bundled SmolLM2-135M on CPU, through the `tunestack` CLI:
LLaMA-Factory output files, the registry entry, resume after kill -9, eval and chat.

Runs are a few steps on a dozen samples, so the whole module takes a few minutes on
two cores; the full demonstration (loss falls, held-out ROUGE-L beats the base model) is
tests/integration/test_trainer_demo.py, marked slow.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SAMPLES

DATA = SAMPLES / "llm_sft"
STEPS = 8
CONFIG = f"""\
model_name_or_path: smollm2-135m-instruct
stage: sft
finetuning_type: lora
lora_target: all
lora_rank: 4
dataset: lumen_qa,lumen_chat
dataset_dir: {DATA}
max_samples: 12
cutoff_len: 128
per_device_train_batch_size: 2
max_steps: {STEPS}
logging_steps: 1
save_steps: 2
learning_rate: 1.0e-3
seed: 7
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("trainer-home")


@pytest.fixture(scope="module")
def config(home: Path) -> Path:
    p = home / "train_tiny.yaml"
    p.write_text(CONFIG, encoding="utf-8")
    return p


def env(home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "TUNESTACK_HOME": str(home),
        "TUNESTACK_MODE": "local",
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "400",  # rich wraps at 80 columns in a pipe; keep messages on one line
    }


def cli(
    home: Path, *args: str, stdin: str | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "platform_cli.main", *args],
        env=env(home),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_jsonl(p: Path) -> list[dict]:
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line]


@pytest.fixture(scope="module")
def reference_run(home: Path, config: Path) -> Iterator[Path]:
    r = cli(home, "llm", "train", "--config", str(config), "run_name=ref", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    yield home / "models" / "llm" / "ref"


def test_train_writes_llamafactory_outputs_and_registers(home: Path, reference_run: Path) -> None:
    out = reference_run / "adapter"
    for name in (
        "adapter_model.safetensors",
        "adapter_config.json",
        "trainer_log.jsonl",
        "training_loss.png",
        "all_results.json",
        "train_results.json",
        "trainer_state.json",
        "training_args.yaml",
        "data_order.jsonl",
    ):
        assert (out / name).is_file(), name
    assert (out / "training_loss.png").read_bytes()[:4] == b"\x89PNG"
    log = read_jsonl(out / "trainer_log.jsonl")
    assert [x["current_steps"] for x in log] == [*range(1, STEPS + 1), STEPS]
    assert all(x["total_steps"] == STEPS and x["loss"] > 0 for x in log[:-1])
    assert "loss" not in log[-1] and log[-1]["percentage"] == 100  # LLaMA-Factory's last line
    results = json.loads((out / "all_results.json").read_text())
    assert results["train_tokens_per_second"] > 0 and results["peak_rss_mb"] > 0
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and {"q_proj", "down_proj"} <= set(adapter["target_modules"])

    meta = json.loads((reference_run / "meta.json").read_text())
    assert meta["base_model"] == "smollm2-135m-instruct"
    assert meta["model_path"] == meta["adapter_path"] == str(out)
    assert len(meta["data_hash"]) == 64
    assert meta["data"]["stats"]["per_dataset"] == {"lumen_qa": 12, "lumen_chat": 12}
    assert meta["parameters"]["lora_rank"] == 4 and meta["metrics"]["train"]["global_step"] == STEPS
    assert meta["chat_format"] == "chatml" and "torch" in meta["versions"]
    r = cli(home, "models", "list", "--kind", "llm", "--json")
    assert "ref" in {m["name"] for m in json.loads(r.stdout)}


def test_resume_after_kill_reaches_same_step_with_same_data_order(
    home: Path, config: Path, reference_run: Path
) -> None:
    out = home / "models" / "llm" / "killed" / "adapter"
    args = [sys.executable, "-m", "platform_cli.main", "llm", "train", "--config", str(config)]
    proc = subprocess.Popen(
        [*args, "run_name=killed"],
        env=env(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            order = out / "data_order.jsonl"
            steps = [x["step"] for x in read_jsonl(order)] if order.is_file() else []
            if (out / "checkpoint-2" / "trainer_state.json").is_file() and max(
                steps, default=0
            ) >= 3:
                break
            assert proc.poll() is None, "training ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("no checkpoint appeared in time")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out.parent / "meta.json").exists()  # an unfinished run is not registered

    r = cli(
        home,
        "llm",
        "train",
        "--config",
        str(config),
        "run_name=killed",
        "resume_from_checkpoint=true",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Resumed from" in r.stdout
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == STEPS
    ref_out = reference_run / "adapter"
    assert read_jsonl(out / "data_order.jsonl") == read_jsonl(ref_out / "data_order.jsonl")
    steps = [x["current_steps"] for x in read_jsonl(out / "trainer_log.jsonl")]
    assert steps == [*range(1, STEPS + 1), STEPS]  # nothing twice across the kill; final line
    meta = json.loads((out.parent / "meta.json").read_text())
    assert meta["resumed_from"].endswith(("checkpoint-2", "checkpoint-4", "checkpoint-6"))

    # Same data, same order, restored RNG and optimizer: the same weights.
    from safetensors.torch import load_file

    a = load_file(out / "adapter_model.safetensors")
    b = load_file(ref_out / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-4, worst


def test_eval_writes_predictions_and_scores(home: Path, reference_run: Path) -> None:
    r = cli(
        home,
        "llm",
        "eval",
        "ref",
        "--dataset",
        "lumen_heldout",
        "--max-samples",
        "3",
        "--max-new-tokens",
        "16",
        "--json",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout)
    out = Path(res["output_dir"])
    assert out == home / "reports" / "ref" / "predict-lumen_heldout"
    rows = read_jsonl(out / "generated_predictions.jsonl")
    assert len(rows) == 3 and set(rows[0]) == {"prompt", "predict", "label"}
    assert rows[0]["prompt"].endswith("<|im_start|>assistant\n") and rows[0]["predict"]
    scores = json.loads((out / "predict_results.json").read_text())
    for k in ("predict_bleu-4", "predict_rouge-1", "predict_rouge-2", "predict_rouge-l"):
        assert 0 <= scores[k] <= 100
    meta = json.loads((reference_run / "meta.json").read_text())
    assert (
        meta["metrics"]["predict"]["lumen_heldout"]["predict_rouge-l"] == scores["predict_rouge-l"]
    )
    # a base model (no run, --dataset-dir given): test_trainer_improves.py evaluates one


def test_chat_uses_the_template_and_stops_at_end_of_turn(home: Path, reference_run: Path) -> None:
    from services.common.registry import Registry
    from services.trainer.chat import ChatSession
    from services.trainer.datasets import Message
    from services.trainer.inference import load_llm, prompt_for

    llm = load_llm("ref", Registry(home))
    prompt = prompt_for(llm, [Message("user", "What is the price of the LO-200 Path Light?")], None)
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    enc = llm.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    stop = llm.template.stop_token_ids(llm.tokenizer)
    assert stop == [llm.tokenizer.convert_tokens_to_ids("<|im_end|>")]
    out = llm.model.generate(**enc, max_new_tokens=64, do_sample=False, eos_token_id=stop)
    new = out[0, enc["input_ids"].shape[1] :].tolist()
    assert new[-1] == stop[0] and len(new) < 64  # ended by <|im_end|>, not by the length limit
    session = ChatSession(llm, max_new_tokens=64)
    first = session.reply("Who founded Lumen & Oak?")
    pieces: list[str] = []
    second = session.reply("And when?", on_text=pieces.append)
    for reply in (first, second):
        assert reply.stop_reason == "stop" and reply.text
        assert "<|im_end|>" not in reply.text and "<|im_start|>" not in reply.text
    assert "".join(pieces).strip() == second.text
    assert len(session.history) == 4

    r = cli(
        home,
        "llm",
        "chat",
        "ref",
        "--max-new-tokens",
        "48",
        stdin="Who are you?\n/reset\nWhat is the price of the LO-200 Path Light?\n",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    answers = [ln for ln in r.stdout.splitlines() if ln.startswith("assistant> ")]
    assert len(answers) == 2 and all(len(a) > len("assistant> ") for a in answers)


def test_bad_records_and_qlora_on_cpu_are_messages_not_tracebacks(home: Path, config: Path) -> None:
    bad = home / "bad_data"
    bad.mkdir()
    (bad / "dataset_info.json").write_text(json.dumps({"d": {"file_name": "d.json"}}))
    (bad / "d.json").write_text(
        json.dumps([{"instruction": "q", "output": "a"}, {"instruction": "q"}])
    )
    r = cli(
        home,
        "llm",
        "train",
        "--config",
        str(config),
        f"dataset_dir={bad}",
        "dataset=d",
        "run_name=bad",
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"{bad / 'd.json'} record 1, field 'output': is missing" in r.stderr

    import torch

    if not torch.cuda.is_available():
        r = cli(home, "llm", "train", "--config", str(config), "quantization_bit=4", "run_name=q")
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert "CUDA" in r.stderr and "hint" in r.stderr
    r = cli(home, "llm", "train", "--config", str(config), "stage=dpo")
    assert r.returncode == 1 and '"ranking": true' in r.stderr  # SFT data under stage dpo


def test_freeze_tuning_with_validation_and_accumulation(home: Path, config: Path) -> None:
    """Full-weight outputs (freeze) load for eval; val_size gives eval_loss; GA steps work."""
    r = cli(
        home,
        "llm",
        "train",
        "--config",
        str(config),
        "run_name=frozen",
        "finetuning_type=freeze",
        "freeze_trainable_layers=1",
        "max_samples=3",
        "val_size=2",
        "gradient_accumulation_steps=2",
        "max_steps=2",
        "cutoff_len=64",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = home / "models" / "llm" / "frozen" / "model"
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert json.loads((out / "eval_results.json").read_text())["eval_loss"] > 0
    meta = json.loads((out.parent / "meta.json").read_text())
    assert meta["adapter_path"] is None and meta["data"]["validation_sequences"] == 2
    assert meta["data"]["train_sequences"] == 4  # 6 records - 2 held for validation
    r = cli(
        home,
        "llm",
        "eval",
        "frozen",
        "--dataset",
        "lumen_heldout",
        "--max-samples",
        "1",
        "--max-new-tokens",
        "4",
        "--json",
    )
    assert r.returncode == 0, r.stderr[-3000:]
