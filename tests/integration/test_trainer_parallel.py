"""Data-parallel `llm train` on CPU: 2 torchrun processes (gloo) against 1 process.

The claim: 2 processes with per-device batch b train exactly what 1 process with batch 2b
trains (same samples per step, same losses, same adapter) and write one set of outputs,
even when the 2-process run is killed mid-way and resumed from its checkpoint. Real
SmolLM2-135M, real torchrun, 6 steps each.

The three tests on those runs (2.5 min on two cores) are marked slow, for CI's time: CI
keeps the launcher (torchrun, the gloo group, rank 0's outputs) through
test_embed_tune_parallel.py's equivalence test and this file's refusals; `make test-slow`
runs them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_trainer import CONFIG, env, read_jsonl

STEPS = 6
PARALLEL = {"NPROC_PER_NODE": "2", "TUNESTACK_TRAIN_THREADS": "1"}


def workers(home: Path) -> list[int]:
    pattern = f"services.trainer.launch --config {home}"
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return [int(p) for p in found.split()]


def weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "adapter" / "adapter_model.safetensors"))


def losses(run: Path) -> list[float]:
    return [r["loss"] for r in read_jsonl(run / "adapter" / "trainer_log.jsonl") if "loss" in r]


def order(run: Path) -> list[list[int]]:
    return [r["samples"] for r in read_jsonl(run / "adapter" / "data_order.jsonl")]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    h = tmp_path_factory.mktemp("parallel-home")
    (h / "train.yaml").write_text(
        CONFIG.replace("max_steps: 8", f"max_steps: {STEPS}"), encoding="utf-8"
    )
    return h


def train(home: Path, *overrides: str, extra: dict[str, str] | None = None, **kw: object):
    cmd = [sys.executable, "-m", "platform_cli.main", "llm", "train"]
    cmd += ["--config", str(home / "train.yaml"), *overrides, "--json"]
    return subprocess.run(
        cmd,
        env={**env(home), **(extra or {})},
        capture_output=True,
        text=True,
        timeout=900,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def one_process(home: Path) -> Path:
    r = train(home, "run_name=one", "per_device_train_batch_size=4")
    assert r.returncode == 0, r.stderr[-3000:]
    return home / "models" / "llm" / "one"


@pytest.fixture(scope="module")
def two_processes(home: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """2 processes with batch 2, killed (the whole process group, kill -9) once
    checkpoint-2 is written, then resumed to the end."""
    out = home / "models" / "llm" / "two" / "adapter"
    cmd = [sys.executable, "-m", "platform_cli.main", "llm", "train"]
    cmd += ["--config", str(home / "train.yaml"), "run_name=two"]
    cmd += ["per_device_train_batch_size=2"]
    proc = subprocess.Popen(
        cmd,
        env={**env(home), **PARALLEL},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own group: the kill reaches torchrun and its workers
    )
    try:
        deadline = time.monotonic() + 600
        while not (out / "checkpoint-2" / "trainer_state.json").exists():
            assert proc.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        # torchrun's workers live in sessions of their own: they must die with it
        deadline = time.monotonic() + 30
        while workers(home):
            assert time.monotonic() < deadline, "workers outlived the killed command"
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in workers(home):
            os.kill(pid, signal.SIGKILL)
    assert not (out.parent / "meta.json").exists()
    r = train(home, "run_name=two", "per_device_train_batch_size=2", extra=PARALLEL)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return out.parent, r


@pytest.mark.slow
def test_two_processes_train_what_one_process_with_twice_the_batch_trains(
    one_process: Path, two_processes: tuple[Path, subprocess.CompletedProcess[str]]
) -> None:
    two, r = two_processes
    assert "Data-parallel: 2 process(es)" in r.stdout + r.stderr
    # the same samples in each global step, rank 0's half first
    assert order(two) == order(one_process)
    assert len(order(two)) == STEPS and all(len(s) == 4 for s in order(two))
    # the same loss curve (gradients averaged over ranks = the big batch's gradient)
    a, b = losses(one_process), losses(two)
    assert len(a) == len(b) == STEPS
    assert b == pytest.approx(a, rel=2e-3), (a, b)
    assert a[-1] < a[0]  # and it learns
    # the same adapter at the end
    wa, wb = weights(one_process), weights(two)
    assert wa.keys() == wb.keys()
    worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    assert worst < 1e-3, worst
    meta = json.loads((two / "meta.json").read_text(encoding="utf-8"))
    assert meta["metrics"]["train"]["train_processes"] == 2
    assert meta["metrics"]["train"]["global_step"] == STEPS


@pytest.mark.slow
def test_one_set_of_outputs(two_processes: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    two, r = two_processes
    out = two / "adapter"
    log = read_jsonl(out / "trainer_log.jsonl")
    assert [x["current_steps"] for x in log] == [*range(1, STEPS + 1), STEPS]  # no rank twice
    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if n.startswith(".")], names  # no staging left behind
    for f in ("adapter_model.safetensors", "training_loss.png", "train_results.json"):
        assert f in names
    # rank 0 speaks for the run: one data summary, not one per rank
    assert r.stderr.count("Data: ") == 1, r.stderr[-3000:]
    printed = json.loads(r.stdout[r.stdout.find("\n{") + 1 :])
    assert printed["run"] == "two" and printed["train_processes"] == 2


@pytest.mark.slow
def test_the_killed_run_resumed_from_its_checkpoint(
    two_processes: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    two, r = two_processes
    assert "Resuming from checkpoint-" in r.stderr
    meta = json.loads((two / "meta.json").read_text(encoding="utf-8"))
    assert meta["resumed_from"] and "checkpoint-" in meta["resumed_from"]
    resumed_at = int(meta["resumed_from"].rsplit("-", 1)[1])
    assert 2 <= resumed_at < STEPS
    assert f"Resumed at step {resumed_at}/{STEPS}" in r.stderr


def test_preference_stages_and_sharding_without_gpus_are_refused(home: Path) -> None:
    r = train(home, "run_name=x", "stage=dpo", extra=PARALLEL)
    assert r.returncode == 1
    assert "runs in one process here" in r.stdout + r.stderr
    ds = Path(__file__).resolve().parents[2] / "samples" / "distributed" / "ds_z3_config.json"
    r = train(home, "run_name=x", f"deepspeed={ds}", extra=PARALLEL)
    assert r.returncode == 1
    assert "deepspeed: needs the deepspeed package" in r.stdout + r.stderr
    r = train(home, "run_name=x", "fsdp=full_shard auto_wrap", extra=PARALLEL)
    assert r.returncode == 1
    assert "fsdp: shards over CUDA GPUs" in r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
