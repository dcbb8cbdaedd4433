"""Data-parallel `llm train` on this machine: 1 process with batch 2b vs 2 processes
(torchrun, gloo) with batch b each, the same optimizer steps on the same samples.

Both go through the `tunestack llm train` command a user runs (the 2-process run with
NPROC_PER_NODE=2), in fresh homes, one after the other, repeated; the figures are
medians. On a CPU the interesting question is whether two processes with one thread
each beat one process with every thread (they share the cores; DDP adds an all-reduce
of the LoRA gradients per step); on GPUs the same command puts one process per GPU.

tokens/s counts real (non-padding) tokens over the Trainer's train_runtime; RSS is the
peak of each process, summed over the processes of the run.
Run: .venv/bin/python bench/train_parallel.py [--steps 12] [--batch 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _harness import ROOT, cpu_flags, median

CONFIG = """\
model_name_or_path: smollm2-135m-instruct
stage: sft
finetuning_type: lora
lora_target: all
lora_rank: 16
dataset: lumen_identity,lumen_qa,lumen_chat
dataset_dir: {data}
cutoff_len: 256
per_device_train_batch_size: {batch}
max_steps: {steps}
logging_steps: 1
save_steps: 100000
plot_loss: false
learning_rate: 1.0e-3
seed: 7
"""


def train(processes: int, batch: int, steps: int) -> dict[str, float]:
    home = Path(tempfile.mkdtemp(prefix="bench-parallel-"))
    try:
        cfg = home / "train.yaml"
        data = ROOT / "samples" / "llm_sft"
        cfg.write_text(CONFIG.format(data=data, batch=batch, steps=steps))
        env = {**os.environ, "TUNESTACK_HOME": str(home), "HF_HUB_OFFLINE": "1"}
        if processes > 1:
            env["NPROC_PER_NODE"] = str(processes)
            env["TUNESTACK_TRAIN_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes))
        cmd = [sys.executable, "-m", "platform_cli.main", "llm", "train"]
        cmd += ["--config", str(cfg), "run_name=b", "--json"]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
        if r.returncode != 0:
            raise SystemExit(r.stderr[-3000:])
        m = json.loads(r.stdout[r.stdout.find("{") :])
        return {
            "tokens_s": float(m["train_tokens_per_second"]),
            "runtime_s": float(m["train_runtime"]),
            "rss_mb": float(m.get("peak_rss_mb_all_processes", m["peak_rss_mb"])),
            "last_loss": float(m["last_logged_loss"]),
        }
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=4, help="global batch (2b)")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"1 process, batch 2b": [], "2 processes, b each": []}
    for _ in range(a.repeats):  # interleaved, so a noisy minute hits both
        runs["1 process, batch 2b"].append(train(1, a.batch, a.steps))
        runs["2 processes, b each"].append(train(2, a.batch // 2, a.steps))
    print(f"CPU: {os.cpu_count()} cores, {cpu_flags()}; {a.steps} steps, global batch {a.batch}")
    base = median([r["tokens_s"] for r in runs["1 process, batch 2b"]])
    print(f"{'run':<22} {'tokens/s':>9} {'x':>6} {'train s':>8} {'RSS MB':>8} {'last loss':>10}")
    for name, rs in runs.items():
        tok = median([r["tokens_s"] for r in rs])
        print(
            f"{name:<22} {tok:>9.1f} {tok / base:>6.2f} "
            f"{median([r['runtime_s'] for r in rs]):>8.1f} "
            f"{median([r['rss_mb'] for r in rs]):>8.0f} "
            f"{median([r['last_loss'] for r in rs]):>10.4f}"
        )


if __name__ == "__main__":
    main()
