"""Loss and reward curves as PNG (training_loss.png, training_eval_loss.png,
training_rewards_accuracies.png, ...) named as LLaMA-Factory names them."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any


def smooth(values: list[float]) -> list[float]:
    """Exponential moving average whose weight grows with the number of points.

    Few points are barely smoothed (a 10-step run should show its real curve); long runs
    get a steady trend line over the noisy per-step losses.
    """
    if not values:
        return []
    weight = 1.8 * (1 / (1 + math.exp(-0.05 * len(values))) - 0.5)
    out = [values[0]]
    for v in values[1:]:
        out.append(out[-1] * weight + (1 - weight) * v)
    return out


def plot_loss(
    output_dir: Path, log_history: list[dict[str, Any]], keys: tuple[str, ...]
) -> list[Path]:
    """One PNG per key found in the log history; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for key in keys:
        points = [(h["step"], float(h[key])) for h in log_history if key in h and "step" in h]
        if not points:
            continue
        steps, values = zip(*points, strict=True)
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        ax.plot(steps, values, color="#1f77b4", alpha=0.4, label="original")
        ax.plot(steps, smooth(list(values)), color="#1f77b4", label="smoothed")
        ax.set_title(f"{key} of {output_dir.name}")
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.legend()
        name = f"training_{key.replace('/', '_')}.png"
        dest = output_dir / name
        fd, tmp = tempfile.mkstemp(dir=output_dir, prefix=f".{name}.", suffix=".png")
        os.close(fd)
        fig.savefig(tmp, format="png", bbox_inches="tight")
        plt.close(fig)
        os.replace(tmp, dest)
        written.append(dest)
    return written
