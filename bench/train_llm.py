"""LoRA SFT of smollm2-135m-instruct on CPU: tokens/s and peak RSS per batching method.

Each variant trains the same number of optimizer steps on the project dataset
(samples/llm_sft) in a fresh process, so its peak RSS is its own:

  default          LLaMA-Factory's defaults (random batches padded to their longest sample,
                   gradient checkpointing on), output head on labelled tokens only
  group_by_length  batches of similar length (less padding)        train_sampling: group_by_length
  packing          samples packed into cutoff_len sequences (no padding)           packing: true
  stock_logits     as default, but the output head over every position (transformers' loss)
  bf16             as default, with bf16 autocast (fast only where the CPU has native bf16)
  no_grad_ckpt     as default, without gradient checkpointing (disable_gradient_checkpointing)

tokens/s counts real (non-padding) tokens, the work that matters; tok/CPU-s divides them by
the process's CPU time instead of wall time, which other processes on a shared machine
cannot inflate (run with TUNESTACK_TRAIN_THREADS=1 there). Ratios are against `default`.
Run: .venv/bin/python bench/train_llm.py [--steps 12] [--batch 8]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _harness import ROOT, run_isolated

VARIANTS: dict[str, dict[str, object]] = {
    "default": {},
    "group_by_length": {"group_by_length": True},
    "packing": {"packing": True},
    "stock_logits": {},
    "bf16": {"bf16": True},
    "no_grad_ckpt": {"disable_gradient_checkpointing": True},
}


def child(variant: str, steps: int, batch: int, home: Path) -> dict[str, object]:
    from services.trainer.config import TrainConfig
    from services.trainer.settings import TrainSettings
    from services.trainer.train import run_training

    cfg = TrainConfig(
        model_name_or_path="smollm2-135m-instruct",
        dataset=["lumen_identity", "lumen_qa", "lumen_chat"],
        dataset_dir=str(ROOT / "samples" / "llm_sft"),
        cutoff_len=256,
        lora_rank=16,
        lora_target="all",
        per_device_train_batch_size=batch,
        max_steps=steps,
        learning_rate=1e-3,
        logging_steps=steps,
        save_steps=10_000,
        plot_loss=False,
        run_name=f"bench-{variant}",
        **VARIANTS[variant],  # type: ignore[arg-type]
    )
    t0 = time.monotonic()
    settings = TrainSettings(home=home, label_only_logits=variant != "stock_logits")
    res = run_training(cfg, settings, say=lambda _m: None, progress=False)
    m = res.metrics
    return {
        "variant": variant,
        "tokens_per_s": m["train_tokens_per_second"],
        "tokens_per_cpu_s": m["train_tokens_per_cpu_second"],
        "tokens": m["train_tokens"],
        "padding": m["train_padding_ratio"],
        "train_s": m["train_runtime"],
        "total_s": round(time.monotonic() - t0, 1),
        "peak_rss_mb": m["peak_rss_mb"],
        "label_only_logits": m["label_only_logits"],
        "final_loss": m.get("last_logged_loss"),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--only", nargs="*", default=list(VARIANTS))
    ap.add_argument("--child")
    ap.add_argument("--home", type=Path)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.steps, a.batch, a.home)))
        return

    from services.common.registry import Registry
    from services.trainer.model_loading import resolve_base

    with tempfile.TemporaryDirectory() as d:
        home = Path(d)
        resolve_base("smollm2-135m-instruct", Registry(home))  # dequantize once, outside timing
        rows = []
        for v in a.only:
            shutil.rmtree(home / "models" / "llm" / f"bench-{v}", ignore_errors=True)
            args = ["--child", v, "--steps", str(a.steps), "--batch", str(a.batch), "--home", d]
            rows.append(run_isolated(Path(__file__), args))
            print(f"  {v}: done", file=sys.stderr)
    base = next((r for r in rows if r["variant"] == "default"), rows[0])
    threads = os.environ.get("TUNESTACK_TRAIN_THREADS", "all cores")
    print(
        f"\nsmollm2-135m-instruct LoRA r16, batch {a.batch}, {a.steps} steps, cutoff 256, "
        f"CPU threads: {threads}"
    )
    print(
        f"{'variant':<16}{'tokens/s':>10}{'ratio':>8}{'tok/CPU-s':>11}{'ratio':>8}"
        f"{'padding':>9}{'peak RSS MB':>13}{'train s':>9}"
    )
    for r in rows:
        print(
            f"{r['variant']:<16}{r['tokens_per_s']:>10.1f}"
            f"{r['tokens_per_s'] / base['tokens_per_s']:>7.2f}x"
            f"{r['tokens_per_cpu_s']:>11.1f}"
            f"{r['tokens_per_cpu_s'] / base['tokens_per_cpu_s']:>7.2f}x"
            f"{r['padding']:>9.0%}{r['peak_rss_mb']:>13.0f}{r['train_s']:>9.1f}"
        )


if __name__ == "__main__":
    main()
