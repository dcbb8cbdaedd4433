"""GPU: tunestack's trainer vs LLaMA-Factory on identical model, data and hyperparameters.

NOT YET RUN: written without a GPU; no GPU numbers exist for it yet. It is meant for one
prepared run on a CUDA machine (e.g. the lent H200) and reports, for bf16 LoRA and for
QLoRA 4-bit: tokens/s (real tokens of the data x epochs / train_runtime) and peak GPU
memory (nvidia-smi, polled the same way for both), with the ratio ours / LLaMA-Factory.
Target: >= 1.0x LLaMA-Factory's tokens/s.

Both trainers read the same HF model folder, samples/llm_sft (LLaMA-Factory reads its
dataset_info.json unchanged) and the same YAML keys; `template: chatml` on both sides
gives identical token streams (every record carries its own system prompt).

The device machine has no network and the carry limit is 64 MiB, so:
  1. here (CPU):  .venv/bin/python bench/gpu_train_vs_llamafactory.py --prepare .cache/gpu-carry
     writes SmolLM2-135M's config + tokenizer (no weights, ~4 MB) and copies any wheels
     found in .cache/wheels-gpu/ (bitsandbytes, llamafactory and its pure-Python deps).
  2. on the GPU:  python bench/gpu_train_vs_llamafactory.py --run .cache/gpu-carry [--epochs 20]
     builds SmolLM2-135M with random weights from the config (same shapes, so the same
     compute and memory as the real weights), installs the carried wheels if needed, and
     runs the four trainings. Pass --model DIR to use real HF weights when present, and
     --lf-python PATH when LLaMA-Factory lives in another environment (it pins older
     transformers than ours).
Results go to stdout and, when $OUT is set, to $OUT/gpu_train_vs_llamafactory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT / "samples" / "llm_sft"
DATASETS = "lumen_identity,lumen_qa,lumen_chat"

COMMON = {
    "stage": "sft",
    "do_train": True,
    "finetuning_type": "lora",
    "lora_target": "all",
    "lora_rank": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.0,
    "dataset": DATASETS,
    "dataset_dir": str(DATA),
    "template": "chatml",
    "cutoff_len": 256,
    "per_device_train_batch_size": 16,
    "gradient_accumulation_steps": 1,
    "learning_rate": 1.0e-3,
    "lr_scheduler_type": "cosine",
    "warmup_ratio": 0.05,
    "logging_steps": 10,
    "save_steps": 100000,
    "bf16": True,
    "seed": 42,
    "report_to": "none",
    "overwrite_output_dir": True,
    "plot_loss": False,
}


# ---- step 1: what to carry -----------------------------------------------------------


def prepare(dest: Path) -> None:
    from services.common.registry import Registry
    from services.trainer.model_loading import resolve_base

    dest.mkdir(parents=True, exist_ok=True)
    with_home = ROOT / ".tunestack"
    hf = resolve_base("smollm2-135m-instruct", Registry(with_home)).hf_dir
    model = dest / "smollm2-135m-shape"
    model.mkdir(exist_ok=True)
    for f in hf.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy2(f, model / f.name)
    wheels = ROOT / ".cache" / "wheels-gpu"
    if wheels.is_dir():
        shutil.copytree(wheels, dest / "wheels", dirs_exist_ok=True)
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) / 2**20
    print(
        f"wrote {dest} ({size:.1f} MiB): config + tokenizer"
        + (", wheels" if wheels.is_dir() else "")
    )


# ---- step 2: on the GPU -----------------------------------------------------------------


def random_weights(shape_dir: Path, out: Path) -> Path:
    """SmolLM2-135M with seeded random weights: identical compute to the real model."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if (out / "model.safetensors").is_file():
        return out
    torch.manual_seed(0)
    cfg = AutoConfig.from_pretrained(shape_dir)
    model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(shape_dir).save_pretrained(out)
    return out


def install_wheels(carry: Path, python: str, *pkgs: str) -> None:
    wheels = carry / "wheels"
    missing = [
        p
        for p in pkgs
        if subprocess.run([python, "-c", f"import {p}"], capture_output=True).returncode != 0
    ]
    if missing and wheels.is_dir():
        subprocess.run(
            [
                python,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-index",
                "--find-links",
                str(wheels),
                *missing,
            ],
            check=False,
        )


class GpuMemoryPoller:
    """Max nvidia-smi memory.used (MiB) while a run lasts; the same meter for both tools."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            r = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
            )
            vals = [int(v) for v in r.stdout.split() if v.strip().isdigit()]
            if vals:
                self.peak = max(self.peak, max(vals))
            time.sleep(0.2)

    def __enter__(self) -> GpuMemoryPoller:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(5)


def dataset_tokens(model_dir: Path) -> int:
    """Real tokens of one epoch, tokenized exactly as both trainers do (chatml, cutoff 256)."""
    from services.trainer import datasets as ds
    from services.trainer.model_loading import load_tokenizer
    from services.trainer.preprocess import PrepStats, build_examples
    from services.trainer.templates import resolve_template

    tok = load_tokenizer(model_dir)
    tmpl = resolve_template("chatml", tok)
    stats = PrepStats()
    for d in ds.load_datasets(DATASETS.split(","), DATA, stage="sft", max_samples=None, seed=42):
        build_examples(
            d.conversations, tok, tmpl, stage="sft", cutoff_len=256, packing=False, stats=stats
        )
    return stats.tokens


def write_yaml(path: Path, cfg: dict[str, object]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def run_one(name: str, cmd: list[str], out_dir: Path, env: dict[str, str]) -> dict[str, object]:
    t0 = time.monotonic()
    with GpuMemoryPoller() as mem:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        return {"run": name, "error": (r.stderr or r.stdout)[-2000:]}
    results = json.loads((out_dir / "all_results.json").read_text())
    return {
        "run": name,
        "train_runtime": results["train_runtime"],
        "peak_gpu_mib_nvidia_smi": mem.peak,
        "peak_gpu_mib_torch": results.get("peak_gpu_memory_mb"),
        "wall_s": round(time.monotonic() - t0, 1),
        "train_loss": results.get("train_loss"),
    }


def run(carry: Path, epochs: float, model: Path | None, lf_python: str) -> None:
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this script measures GPU training only")
    print("GPU:", torch.cuda.get_device_name(0))
    install_wheels(carry, sys.executable, "bitsandbytes")
    install_wheels(carry, lf_python, "llamafactory", "bitsandbytes")
    work = Path(os.environ.get("OUT", "/tmp")) / "gpu-bench"
    work.mkdir(parents=True, exist_ok=True)
    model_dir = model or random_weights(carry / "smollm2-135m-shape", work / "smollm2-135m-random")
    tokens = dataset_tokens(model_dir) * epochs
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TUNESTACK_HOME": str(work / "home")}
    has_lf = (
        subprocess.run([lf_python, "-c", "import llamafactory"], capture_output=True).returncode
        == 0
    )

    rows = []
    for quant in (None, 4):
        tag = "bf16-lora" if quant is None else "qlora-4bit"
        cfg = {**COMMON, "model_name_or_path": str(model_dir), "num_train_epochs": epochs}
        if quant:
            cfg["quantization_bit"] = quant
        ours_out = work / f"ours-{tag}"
        ours_cfg = write_yaml(
            work / f"ours-{tag}.yaml",
            {**cfg, "output_dir": str(ours_out), "run_name": f"ours-{tag}"},
        )
        rows.append(
            run_one(
                f"tunestack {tag}",
                [
                    sys.executable,
                    "-m",
                    "platform_cli.main",
                    "llm",
                    "train",
                    "--config",
                    str(ours_cfg),
                ],
                ours_out,
                {**env, "PYTHONPATH": str(ROOT)},
            )
        )
        if has_lf:
            lf_out = work / f"llamafactory-{tag}"
            lf_cfg = {k: v for k, v in cfg.items() if k != "run_name"}
            lf_cfg["output_dir"] = str(lf_out)
            lf_yaml = write_yaml(work / f"llamafactory-{tag}.yaml", lf_cfg)
            cli = str(Path(lf_python).with_name("llamafactory-cli"))
            rows.append(run_one(f"llamafactory {tag}", [cli, "train", str(lf_yaml)], lf_out, env))
        else:
            rows.append(
                {
                    "run": f"llamafactory {tag}",
                    "error": f"llamafactory not importable by {lf_python}",
                }
            )
    for r in rows:
        if "train_runtime" in r:
            r["tokens_per_s"] = round(tokens / float(r["train_runtime"]), 1)  # type: ignore[arg-type]
    print(f"\n{'run':<26}{'tokens/s':>10}{'peak GPU MiB':>14}{'train s':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['run']:<26}  error: {str(r['error']).splitlines()[-1][:80]}")
        else:
            print(
                f"{r['run']:<26}{r['tokens_per_s']:>10.1f}{r['peak_gpu_mib_nvidia_smi']:>14}{r['train_runtime']:>9.1f}"
            )
    for tag in ("bf16-lora", "qlora-4bit"):
        a = next((r for r in rows if r["run"] == f"tunestack {tag}" and "tokens_per_s" in r), None)
        b = next(
            (r for r in rows if r["run"] == f"llamafactory {tag}" and "tokens_per_s" in r), None
        )
        if a and b:
            ratio = float(a["tokens_per_s"]) / float(b["tokens_per_s"])  # type: ignore[arg-type]
            print(f"{tag}: tunestack / LLaMA-Factory tokens/s = {ratio:.2f}x")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_train_vs_llamafactory.json").write_text(
            json.dumps(rows, indent=2)
        )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--prepare", type=Path, metavar="DIR", help="write what the GPU run needs")
    g.add_argument("--run", type=Path, metavar="DIR", help="run on a CUDA machine")
    ap.add_argument("--epochs", type=float, default=20.0)
    ap.add_argument("--model", type=Path, help="real HF weights to use instead of random ones")
    ap.add_argument("--lf-python", default=sys.executable, help="python that has llamafactory")
    a = ap.parse_args()
    if a.prepare:
        prepare(a.prepare)
    else:
        run(a.run, a.epochs, a.model, a.lf_python)


if __name__ == "__main__":
    main()
