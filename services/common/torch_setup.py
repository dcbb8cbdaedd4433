"""One place that tunes torch for the machine we run on."""

from __future__ import annotations

import os


def configure_torch() -> None:
    """Use every core but no more: oversubscribed threads make CPU inference slower."""
    import torch

    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if n and torch.get_num_threads() != n:
        torch.set_num_threads(n)
