"""`llm eval`: generate answers for a dataset and score them (LLaMA-Factory's do_predict).

Writes generated_predictions.jsonl ({"prompt", "predict", "label"} per line) and
predict_results.json (predict_bleu-4, predict_rouge-1/2/l, runtime, samples/s), the
files and keys LLaMA-Factory writes, into reports/<run>/predict-<dataset>/ by default.
For a trained run the scores are also recorded in its meta.json. Generation is greedy,
so the same model on the same data gives the same numbers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common import atomic
from services.common.errors import BadInput
from services.common.records import LlmRecord
from services.common.registry import Registry
from services.trainer import datasets as ds
from services.trainer.inference import LoadedLLM, generate, load_llm, prompt_for
from services.trainer.metrics import aggregate, similarity

Progress = Callable[[int, int], None]


@dataclass
class EvalResult:
    name: str
    output_dir: Path
    metrics: dict[str, Any]
    predictions: list[dict[str, str]]


def default_dataset_dir(record: LlmRecord | None, fallback: str) -> Path:
    """A run remembers where its training data was; a base model uses the setting."""
    d = ((record.data if record is not None else None) or {}).get("dataset_dir")
    return Path(d) if d else Path(fallback)


def evaluate(
    name: str,
    datasets: list[str],
    registry: Registry,
    *,
    dataset_dir: Path | None = None,
    fallback_dataset_dir: str = "data",
    max_samples: int | None = None,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    output_dir: Path | None = None,
    template: str | None = None,
    system: str | None = None,
    progress: Progress | None = None,
    llm: LoadedLLM | None = None,
    threads: int | None = None,
) -> EvalResult:
    if not datasets:
        raise BadInput("No dataset to evaluate on.", hint="Pass --dataset NAME.")
    if batch_size < 1 or max_new_tokens < 1:
        raise BadInput("batch size and max new tokens must be positive.")
    llm = llm or load_llm(name, registry, template=template, system=system, threads=threads)
    ddir = (dataset_dir or default_dataset_dir(llm.record, fallback_dataset_dir)).resolve()
    loaded = ds.load_datasets(datasets, ddir, stage="sft", max_samples=max_samples, seed=42)
    convs = [c for d in loaded for c in d.conversations]
    if not convs:
        raise BadInput(f"Dataset(s) {', '.join(datasets)} have no usable records.")
    prompts = [prompt_for(llm, c.prompt, c.system, c.tools) for c in convs]
    labels = [c.response for c in convs]

    t0 = time.monotonic()
    preds, steps = _generate_all(llm, prompts, batch_size, max_new_tokens, progress)
    runtime = time.monotonic() - t0

    rows = [
        {"prompt": prompts[i], "predict": preds[i], "label": labels[i]} for i in range(len(prompts))
    ]
    metrics = _predict_metrics(rows, runtime, steps)
    metrics.update({"max_new_tokens": max_new_tokens, "datasets": datasets, "model": name})
    key = "+".join(datasets)
    out = output_dir or registry.reports / _report_name(name) / f"predict-{key}"
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(
        out / "generated_predictions.jsonl",
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
    )
    atomic.write_json(out / "predict_results.json", metrics)
    if not llm.is_base:
        _record_scores(registry, name, key, metrics, out)
    return EvalResult(name, out, metrics, rows)


def _generate_all(
    llm: LoadedLLM,
    prompts: list[str],
    batch_size: int,
    max_new_tokens: int,
    progress: Progress | None,
) -> tuple[list[str], int]:
    """Greedy answers in the prompts' order, and the number of batches generated.

    Generated longest-first in batches (less padding), then put back in dataset order.
    """
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    preds: dict[int, str] = {}
    steps = 0
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        outs = generate(llm, [prompts[i] for i in idx], max_new_tokens=max_new_tokens)
        for i, (text, _) in zip(idx, outs, strict=True):
            preds[i] = text
        steps += 1
        if progress:
            progress(min(s + batch_size, len(order)), len(order))
    return [preds[i] for i in range(len(prompts))], steps


def _predict_metrics(rows: list[dict[str, str]], runtime: float, steps: int) -> dict[str, Any]:
    """predict_results.json's keys, as LLaMA-Factory names them."""
    scores = aggregate([similarity(r["predict"], r["label"]) for r in rows])
    metrics: dict[str, Any] = {f"predict_{k}": v for k, v in scores.items()}
    metrics.update(
        {
            "predict_runtime": round(runtime, 4),
            "predict_samples_per_second": round(len(rows) / runtime, 3) if runtime else 0,
            "predict_steps_per_second": round(steps / runtime, 3) if runtime else 0,
            "num_samples": len(rows),
        }
    )
    return metrics


def _report_name(name: str) -> str:
    p = Path(name)
    return p.name if p.exists() else name


def _record_scores(
    registry: Registry, name: str, key: str, metrics: dict[str, Any], out: Path
) -> None:
    """Add the scores to the run's record as metrics.predict[<datasets>], under the
    registry's lock so a concurrent deploy or export record is never lost."""

    def add(record: LlmRecord) -> LlmRecord:
        predict = dict(record.metrics.get("predict") or {})
        predict[key] = {**metrics, "report": str(out)}
        record.metrics = {**record.metrics, "predict": predict}
        return record

    registry.update("llm", name, add)
