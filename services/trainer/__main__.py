"""Container entrypoint: `python -m services.trainer train --config FILE.yaml [key=value ...]`
and `python -m services.trainer eval RUN --dataset NAME [--max-samples N]`.

The same code as `tunestack llm train|eval`, without the CLI package, so the jobs image
needs only the trainer's dependencies. Anticipated failures print a message and a hint
and exit 1; they never print a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from services.common.errors import TunestackError
from services.common.registry import Registry
from services.trainer.settings import TrainSettings


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m services.trainer")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="LoRA/QLoRA/full SFT from a LLaMA-Factory style YAML")
    t.add_argument("--config", type=Path, required=True)
    t.add_argument("overrides", nargs="*", help="key=value, e.g. max_steps=20")
    e = sub.add_parser("eval", help="generate + BLEU-4/ROUGE on a dataset")
    e.add_argument("run")
    e.add_argument("--dataset", required=True, help="NAME[,NAME...] from dataset_info.json")
    e.add_argument("--dataset-dir", type=Path)
    e.add_argument("--max-samples", type=int)
    e.add_argument("--max-new-tokens", type=int)
    args = p.parse_args(argv)
    settings = TrainSettings()
    try:
        if args.cmd == "train":
            from services.trainer.config import load_config, parse_overrides
            from services.trainer.train import run_training

            cfg, ignored = load_config(args.config, parse_overrides(args.overrides))
            res = run_training(cfg, settings, config_path=args.config, ignored_keys=ignored)
            print(
                json.dumps({"run": res.run_name, "output_dir": str(res.output_dir), **res.metrics})
            )
        else:
            from services.trainer.evaluate import evaluate

            r = evaluate(
                args.run,
                [d.strip() for d in args.dataset.split(",") if d.strip()],
                Registry(settings.home_dir),
                dataset_dir=args.dataset_dir,
                fallback_dataset_dir=settings.dataset_dir,
                max_samples=args.max_samples,
                max_new_tokens=args.max_new_tokens or settings.max_new_tokens,
                batch_size=settings.eval_batch_size,
            )
            print(json.dumps({"output_dir": str(r.output_dir), **r.metrics}, ensure_ascii=False))
    except TunestackError as err:
        print(f"error: {err.message}", file=sys.stderr)
        if err.hint:
            print(f"hint: {err.hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "interrupted; rerun the same command to resume from the last checkpoint",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
