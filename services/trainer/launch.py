"""`llm train` over several processes: the parent starts torchrun, each worker trains.

The parent validates the config first (a typo should be one clear message, not one per
rank), then runs `torchrun ... -m services.trainer.launch` with the same config and
overrides. Every worker runs `run_training`; rank 0 alone writes the outputs and the
registry entry, and hands the parent its result (or its error) through a JSON file, so
the command prints the same table and the same messages as a one-process run.

The workers' output is the parent's: rank 0's progress lines and messages, torchrun's
own lines, and, on a crash, the failing rank's traceback from torchrun's error summary.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.common import distributed
from services.common.distributed import Launch, die_with_parent, torchrun_command
from services.common.errors import BadInput, TunestackError
from services.common.settings import process_environ
from services.trainer.config import PREFERENCE_STAGES, TrainConfig, load_config, parse_overrides
from services.trainer.settings import TrainSettings

if TYPE_CHECKING:  # importing train loads torch
    from services.trainer.train import TrainResult

Say = Callable[[str], None]
WORKER = "services.trainer.launch"


def check_parallel_config(cfg: TrainConfig, launch: Launch) -> None:
    """What data-parallel training does not do here, said before any process starts."""
    if cfg.stage in PREFERENCE_STAGES:
        raise BadInput(
            f"stage {cfg.stage} runs in one process here ({launch.world_size} were asked for).",
            hint="Unset NPROC_PER_NODE/NNODES/FORCE_TORCHRUN for preference training; "
            "sft and pt train data-parallel.",
        )


def train_data_parallel(
    settings: TrainSettings,
    cfg: TrainConfig,
    config: Path,
    overrides: list[str],
    launch: Launch,
    say: Say,
) -> TrainResult | None:
    """Run `launch.nproc_per_node` workers on this node and return rank 0's result
    (None on the other nodes of a multi-node run: node 0 writes the outputs)."""
    from services.trainer.train import preflight  # heavy: torch + transformers

    check_parallel_config(cfg, launch)
    preflight(cfg)
    say(
        f"Data-parallel: {launch.nproc_per_node} process(es) on node {launch.node_rank} "
        f"of {launch.nnodes} ({launch.world_size} in all, "
        f"rendezvous {launch.master_addr}:{launch.master_port})."
    )
    with distributed.handoff_dir(Path(settings.home).expanduser()) as tmp:
        result = tmp / "result.json"
        args = ["--config", str(config), "--result", str(result), *overrides]
        code = subprocess.call(
            torchrun_command(launch, WORKER, args),
            env=process_environ(),
            preexec_fn=die_with_parent,  # only a prctl: safe between fork and exec
        )
        outcome = distributed.read_outcome(result)
    if outcome is not None:
        return _result_from_json(outcome)
    if launch.node_rank != 0:
        if code == 0:
            return None
        raise TunestackError(
            f"Training failed on node {launch.node_rank} (torchrun exit code {code}).",
            hint="Node 0's log has the run's messages; fix the cause there and rerun "
            "every node to resume from the last checkpoint.",
        )
    raise TunestackError(
        f"Training stopped before it finished (torchrun exit code {code}).",
        hint="See the error above. Rerun the same command to resume from the last "
        "checkpoint (checkpoints are written every save_steps).",
    )


# ---- rank 0 -> parent --------------------------------------------------------------------


def _result_to_json(res: TrainResult) -> dict[str, Any]:
    return {
        "run_name": res.run_name,
        "output_dir": str(res.output_dir),
        "registry_dir": str(res.registry_dir),
        "metrics": res.metrics,
        "stats": res.stats.to_dict(),
        "resumed_from": res.resumed_from,
        "ignored_keys": res.ignored_keys,
    }


def _result_from_json(d: dict[str, Any]) -> TrainResult:
    from services.trainer.preprocess import PrepStats  # heavy: torch
    from services.trainer.train import TrainResult  # heavy: torch + transformers

    return TrainResult(
        run_name=d["run_name"],
        output_dir=Path(d["output_dir"]),
        registry_dir=Path(d["registry_dir"]),
        metrics=d["metrics"],
        stats=PrepStats(**d["stats"]),
        resumed_from=d["resumed_from"],
        ignored_keys=d["ignored_keys"],
    )


def worker(argv: list[str]) -> int:
    """One torchrun worker: train with this rank; rank 0 reports to the parent."""
    from services.trainer.train import run_training  # heavy: torch + transformers

    p = argparse.ArgumentParser(prog=WORKER)
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--result", type=Path, required=True)
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
    settings = TrainSettings()

    def train() -> dict[str, Any]:
        cfg, ignored = load_config(a.config, parse_overrides(a.overrides))
        res = run_training(
            cfg,
            settings,
            config_path=a.config,
            ignored_keys=ignored,
            say=lambda m: print(m, file=sys.stderr, flush=True),  # as the CLI says it
            progress=settings.progress,
        )
        return _result_to_json(res)

    return distributed.run_worker(a.result, settings.rank, train)


if __name__ == "__main__":
    sys.exit(worker(sys.argv[1:]))
