"""Our preference losses against TRL's own: DPOTrainer.dpo_loss (sigmoid, conservative
sigmoid, hinge, ipo) and KTOTrainer.kto_loss, on the same random log-probabilities.

TRL is not a dependency (services/trainer/pref_loss.py writes the formulas out), so this
imports an unpacked TRL wheel from a folder and stubs the optional packages TRL imports at
module level (mergekit, llm_blender, weave, ...) but never calls in these two functions:

    pip download --no-deps trl==0.24.0 -d /tmp/trl && unzip -q /tmp/trl/trl-*.whl -d /tmp/trl
    .venv/bin/python bench/pref_loss_vs_trl.py --trl-dir /tmp/trl

Prints the largest absolute difference of losses and rewards per loss type (0.0 with TRL
0.24.0, the newest version LLaMA-Factory accepts).
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import sys
import types
from pathlib import Path
from typing import Any
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.trainer.pref_loss import PrefParams, dpo_loss, kto_loss

OPTIONAL = ("mergekit", "llm_blender", "weave", "liger_kernel", "deepspeed", "vllm", "wandb")


class _Stubs(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Empty stand-ins for TRL's optional imports (module level only, never called here)."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name.split(".")[0] in OPTIONAL:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec: Any) -> Any:
        m = mock.MagicMock()
        m.__path__, m.__spec__, m.__name__ = [], spec, spec.name
        return m

    def exec_module(self, module: Any) -> None:
        return None


class _Accelerator:
    device = torch.device("cpu")

    def gather_for_metrics(self, x: torch.Tensor) -> torch.Tensor:
        return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trl-dir", type=Path, required=True, help="folder with an unpacked trl/")
    args = ap.parse_args()
    sys.path.insert(0, str(args.trl_dir))
    sys.meta_path.insert(0, _Stubs())
    from trl.trainer.dpo_trainer import DPOTrainer
    from trl.trainer.kto_trainer import KTOTrainer

    torch.manual_seed(0)
    c, r, rc, rr = (torch.randn(16) * 5 - 20 for _ in range(4))
    for loss_type, beta, ls in [
        ("sigmoid", 0.1, 0.0),
        ("sigmoid", 0.5, 0.2),
        ("hinge", 0.1, 0.0),
        ("hinge", 2.0, 0.0),
        ("ipo", 0.1, 0.0),
        ("ipo", 0.5, 0.0),
    ]:
        fake = types.SimpleNamespace(
            beta=beta,
            label_smoothing=ls,
            loss_type=loss_type,
            reference_free=False,
            f_divergence_type="reverse_kl",
            f_divergence_params={},
            accelerator=_Accelerator(),
            use_weighting=False,
            args=types.SimpleNamespace(ld_alpha=None),
        )
        try:
            theirs = DPOTrainer.dpo_loss(fake, c, r, rc, rr, loss_type=loss_type)
        except TypeError:  # older TRL: loss type from self only
            theirs = DPOTrainer.dpo_loss(fake, c, r, rc, rr)
        ours = dpo_loss(c, r, rc, rr, PrefParams(loss_type, beta=beta, label_smoothing=ls))
        diff = max(
            float((a - b).abs().max())
            for a, b in zip(
                (ours.losses, ours.chosen_rewards, ours.rejected_rewards), theirs, strict=True
            )
        )
        print(f"dpo {loss_type:8s} beta {beta:<4} label_smoothing {ls:<4} max |diff| {diff:.2e}")

    kl_p, kl_r = torch.randn(16) - 20, torch.randn(16) - 20
    fake = types.SimpleNamespace(
        beta=0.3,
        desirable_weight=1.5,
        undesirable_weight=0.7,
        loss_type="kto",
        calculate_KL=True,
        accelerator=_Accelerator(),
    )
    theirs = KTOTrainer.kto_loss(fake, c[:9], r[:7], kl_p, rc[:9], rr[:7], kl_r)
    p = PrefParams(beta=0.3, kto_chosen_weight=1.5, kto_rejected_weight=0.7)
    o = kto_loss(c[:9], r[:7], kl_p, rc[:9], rr[:7], kl_r, p)
    diff = max(
        float((a - b).abs().max())
        for a, b in zip((o.losses, o.chosen_rewards, o.rejected_rewards, o.kl), theirs, strict=True)
    )
    print(f"kto beta 0.3 weights 1.5/0.7 max |diff| {diff:.2e}")


if __name__ == "__main__":
    main()
