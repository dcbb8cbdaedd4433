"""Evaluation reports: reports/<run>/{report.json, report.md, metrics.png}, written
atomically, the same whether the CLI, an API job or a bench made them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from services.common import atomic

BAR_METRICS = ("hit@1", "hit@5", "hit@10", "mrr@10", "ndcg@10", "map@100")
TABLE_METRICS = (
    "hit@1",
    "hit@3",
    "hit@5",
    "hit@10",
    "mrr@10",
    "ndcg@10",
    "recall@10",
    "map@100",
    "encode_seconds",
)


def pyplot() -> Any:
    """matplotlib's pyplot on the headless Agg backend (imported on first plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def markdown_table(
    models: dict[str, dict[str, float]], metrics: tuple[str, ...] = TABLE_METRICS
) -> str:
    cols = [m for m in metrics if any(m in v for v in models.values())]
    lines = ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, vals in models.items():
        cells = [
            f"{vals[c]:.4f}" if isinstance(vals.get(c), float) else str(vals.get(c, ""))
            for c in cols
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bar_chart(models: dict[str, dict[str, float]], path: Path, title: str) -> None:
    plt = pyplot()
    metrics = [m for m in BAR_METRICS if all(m in v for v in models.values())]
    n = len(models)
    width = 0.8 / max(1, n)
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(metrics)), 4))
    lo = min(v[m] for v in models.values() for m in metrics)
    for i, (name, vals) in enumerate(models.items()):
        xs = [j + i * width for j in range(len(metrics))]
        bars = ax.bar(xs, [vals[m] for m in metrics], width, label=name)
        for b in bars:
            ax.annotate(
                f"{b.get_height():.3f}",
                (b.get_x() + b.get_width() / 2, b.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
            )
    ax.set_xticks([j + width * (n - 1) / 2 for j in range(len(metrics))])
    ax.set_xticklabels(metrics)
    ax.set_ylim(max(0.0, lo - 0.1), 1.0)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(
    reports: Path,
    dataset: str,
    models: dict[str, dict[str, float]],
    extra: dict[str, Any] | None = None,
) -> Path:
    """reports/<run>/{report.json, report.md, metrics.png}, written atomically."""
    stem = Path(dataset).stem.replace(".", "-")
    run = f"eval-{time.strftime('%Y%m%d-%H%M%S')}-{stem}"
    final = reports / run
    with atomic.staged_dir(final) as tmp:
        body = {
            "dataset": dataset,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "models": models,
            **(extra or {}),
        }
        atomic.write_json(tmp / "report.json", body)
        md = [f"# Retrieval evaluation: {Path(dataset).name}", "", markdown_table(models), ""]
        if extra and extra.get("error_reduction"):
            md += ["Error reduction in (1 - MRR@10) vs the first model:", ""]
            md += [f"- {k}: {v:.1%}" for k, v in extra["error_reduction"].items()]
        (tmp / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")
        bar_chart(models, tmp / "metrics.png", f"{Path(dataset).name}: base vs tuned")
    return final
