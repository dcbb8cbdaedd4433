"""The embedding tuner's training curve: loss per step and validation MRR@10."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.common.reports import pyplot


def loss_curve(history: list[dict[str, Any]], path: Path, title: str) -> None:
    plt = pyplot()
    steps = [h["step"] for h in history if "loss" in h]
    loss = [h["loss"] for h in history if "loss" in h]
    evals = [(h["step"], v) for h in history for k, v in h.items() if k.endswith("mrr@10")]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, loss, marker=".", label="train loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if evals:
        ax2 = ax.twinx()
        ax2.plot(
            [s for s, _ in evals],
            [v for _, v in evals],
            color="tab:green",
            marker="o",
            label="validation MRR@10",
        )
        ax2.set_ylabel("validation MRR@10")
        ax2.legend(loc="upper right")
    ax.legend(loc="upper left")
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
