"""Held-out reward accuracy of a trained DPO run, optionally with the chosen answers' citation
markers removed: does the run prefer the grounded numbers, or only the "[n]" at the end?

Scores the pairs of a preference dataset (default lumen_prefs_heldout) with the run's
adapter and with the adapter disabled (the LoRA reference), as training does, and prints the
fraction of pairs whose chosen reward beta x (policy - reference) log-prob beats the
rejected one's.

  .venv/bin/python samples/llm_prefs/heldout_accuracy.py --run lumen-dpo-smollm2 --no-citation
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from services.common.registry import Registry  # noqa: E402
from services.trainer.datasets import Message, load_dataset  # noqa: E402
from services.trainer.model_loading import load_tokenizer  # noqa: E402
from services.trainer.pref_data import PairCollator, build_pair_examples  # noqa: E402
from services.trainer.pref_loss import sequence_logps  # noqa: E402
from services.trainer.preprocess import PrepStats  # noqa: E402
from services.trainer.settings import TrainSettings  # noqa: E402
from services.trainer.templates import resolve_template  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default="lumen-dpo-smollm2", help="a trained LoRA dpo run")
    ap.add_argument("--dataset", default="lumen_prefs_heldout")
    ap.add_argument("--dataset-dir", type=Path, default=ROOT / "samples" / "llm_prefs")
    ap.add_argument("--no-citation", action="store_true", help="strip [n] from chosen answers")
    ap.add_argument("--batch-size", type=int, default=3)
    args = ap.parse_args()

    from peft import PeftModel  # heavy: only once the arguments are valid
    from transformers import AutoModelForCausalLM

    rec = Registry(TrainSettings().home_dir).llm(args.run).record
    params = rec.parameters
    tokenizer = load_tokenizer(str(rec.base_model_path))
    template = resolve_template(params.get("template"), tokenizer, rec.default_system)
    base = AutoModelForCausalLM.from_pretrained(str(rec.base_model_path))
    model = PeftModel.from_pretrained(base, str(rec.adapter_path)).eval()
    convs = load_dataset(args.dataset, args.dataset_dir, stage="dpo").conversations
    if args.no_citation:
        for c in convs:
            assert c.chosen is not None
            c.chosen = Message("assistant", re.sub(r"\s*(\[\d+\])+$", "", c.chosen.content))
    pairs = build_pair_examples(
        convs, tokenizer, template, cutoff_len=int(params["cutoff_len"]), stats=PrepStats()
    )
    collate = PairCollator(tokenizer.pad_token_id)
    beta = float(params["pref_beta"])
    wins: list[bool] = []
    t0 = time.monotonic()
    for i in range(0, len(pairs), args.batch_size):
        batch = collate([p.as_dict() for p in pairs[i : i + args.batch_size]])
        batch.pop("sample_ids")
        with torch.no_grad():
            policy, _ = sequence_logps(model, **batch, label_only=True)
            with model.disable_adapter():
                ref, _ = sequence_logps(model, **batch, label_only=True)
        rewards = beta * (policy - ref)
        n = rewards.shape[0] // 2
        wins += (rewards[:n] > rewards[n:]).tolist()
    what = "chosen without citation" if args.no_citation else "as trained"
    print(
        f"{args.run} on {args.dataset} ({what}): reward accuracy {sum(wins)}/{len(wins)} = "
        f"{sum(wins) / len(wins):.3f} ({time.monotonic() - t0:.0f} s)"
    )


if __name__ == "__main__":
    main()
