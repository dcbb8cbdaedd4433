"""Trainer callbacks: a progress bar with loss and ETA, and LLaMA-Factory's trainer_log.jsonl.

Both survive resumption: after `kill -9` the log lines written after the last checkpoint
are dropped when training resumes from it, so the log never shows a step twice.

Like LLaMA-Factory's LogCallback, a line is written for every logged step, every
evaluation and once more at the end of the run (the Trainer's final log: no `loss`,
percentage 100), so even a run shorter than `logging_steps` leaves a line behind.
Preference runs add LLaMA-Factory's `reward` and `accuracy` (from `rewards/chosen` and
`rewards/accuracies`) and the `rewards/*` metrics themselves.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from transformers import TrainerCallback

LOG_NAME = "trainer_log.jsonl"
DATA_ORDER_NAME = "data_order.jsonl"
REWARD_KEYS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins")


def _hms(seconds: float) -> str:
    return str(timedelta(seconds=int(max(seconds, 0))))


def _elapsed_and_eta(start: float, start_step: int, state: Any) -> tuple[float, float]:
    """Seconds since `start`, and the rest at this run's pace (steps since a resume only)."""
    elapsed = time.monotonic() - start
    done = state.global_step - start_step
    return elapsed, elapsed / done * (state.max_steps - state.global_step) if done else 0.0


def truncate_jsonl(path: Path, key: str, max_step: int) -> None:
    """Keep only lines whose `key` is <= max_step (and drop a torn last line)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if int(rec.get(key, 0)) <= max_step:
            kept.append(line)
    path.write_text("".join(f"{ln}\n" for ln in kept), encoding="utf-8")


class LogCallback(TrainerCallback):
    """Writes trainer_log.jsonl in LLaMA-Factory's shape, one line per log event."""

    def __init__(self, output_dir: Path) -> None:
        self.path = output_dir / LOG_NAME
        self.start = time.monotonic()
        self.start_step = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.start = time.monotonic()
        self.start_step = state.global_step
        if state.global_step == 0:
            self.path.unlink(missing_ok=True)
        else:
            truncate_jsonl(self.path, "current_steps", state.global_step)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
        logs = logs or {}
        if not any(k in logs for k in ("loss", "eval_loss", "train_runtime")):
            return
        elapsed = time.monotonic() - self.start
        done = state.global_step - self.start_step
        left = state.max_steps - state.global_step
        remaining = elapsed / done * left if done > 0 else 0.0
        rec = {
            "current_steps": state.global_step,
            "total_steps": state.max_steps,
            "loss": logs.get("loss"),
            "eval_loss": logs.get("eval_loss"),
            "reward": logs.get("rewards/chosen"),
            "accuracy": logs.get("rewards/accuracies"),
            "lr": logs.get("learning_rate"),
            "epoch": logs.get("epoch", state.epoch),
            "percentage": round(state.global_step / state.max_steps * 100, 2)
            if state.max_steps
            else 100,
            "elapsed_time": _hms(elapsed),
            "remaining_time": _hms(remaining),
        }
        for key in REWARD_KEYS:
            rec[key] = logs.get(key)
            rec[f"eval_{key}"] = logs.get(f"eval_{key}")
        rec = {k: v for k, v in rec.items() if v is not None}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()


class ProgressCallback(TrainerCallback):
    """A rich progress bar (steps, loss, lr, ETA) on a terminal; plain lines otherwise."""

    def __init__(self, enabled: bool | None = None, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.live = sys.stderr.isatty() if enabled is None else enabled
        self.progress: Progress | None = None
        self.task: Any = None
        self.loss: float | None = None
        self.start = time.monotonic()
        self.start_step = 0

    def _fields(self, lr: float | None = None) -> str:
        parts = []
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if lr is not None:
            parts.append(f"lr {lr:.2e}")
        return "  ".join(parts)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.start = time.monotonic()
        self.start_step = state.global_step
        if self.live:
            self.progress = Progress(
                TextColumn("[bold]Training"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.progress.start()
            self.task = self.progress.add_task(
                "train", total=state.max_steps, completed=state.global_step, stats=""
            )
        elif state.global_step:
            self.console.print(f"Resumed at step {state.global_step}/{state.max_steps}")

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
        logs = logs or {}
        if "loss" in logs:
            self.loss = float(logs["loss"])
        if self.progress is not None:
            self.progress.update(self.task, stats=self._fields(logs.get("learning_rate")))
            if "eval_loss" in logs:
                self.progress.console.print(
                    f"step {state.global_step}: eval_loss {logs['eval_loss']:.4f}"
                )
            return
        if "loss" not in logs and "eval_loss" not in logs:
            return
        elapsed, eta = _elapsed_and_eta(self.start, self.start_step, state)
        what = (
            self._fields(logs.get("learning_rate"))
            if "loss" in logs
            else f"eval_loss {logs['eval_loss']:.4f}"
        )
        self.console.print(
            f"step {state.global_step}/{state.max_steps}  {what}  "
            f"elapsed {_hms(elapsed)}  ETA {_hms(eta)}",
            highlight=False,
        )

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)
            self.progress.stop()
            self.progress = None


class StepReport(TrainerCallback):
    """Each step as (step, max_steps, message) to a job's progress: a queued `llm train`
    shows its step, loss and ETA in GET /v1/jobs/{id} as the terminal shows them."""

    def __init__(self, report: Callable[[int, int, str], None]) -> None:
        self.report = report
        self.loss: float | None = None
        self.start = time.monotonic()
        self.start_step = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.start, self.start_step = time.monotonic(), state.global_step
        resumed = f" (resumed at step {state.global_step})" if state.global_step else ""
        self.report(state.global_step, state.max_steps, "training" + resumed)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        _, eta = _elapsed_and_eta(self.start, self.start_step, state)
        loss = f"  loss {self.loss:.4f}" if self.loss is not None else ""
        self.report(
            state.global_step,
            state.max_steps,
            f"step {state.global_step}/{state.max_steps}{loss}  ETA {_hms(eta)}",
        )
