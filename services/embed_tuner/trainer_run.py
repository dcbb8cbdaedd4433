"""The sentence-transformers trainer set up for our data, losses and checkpoints."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common import distributed
from services.common.qa import QADataset
from services.common.registry import Entry
from services.common.torch_setup import resolve_precision

VAL_NAME = "val"
BEST_METRIC = f"eval_{VAL_NAME}_cosine_mrr@10"
RESUMED = "resumed from checkpoint-"
# (step, total steps, message): "loss 0.1234" per step, RESUMED + N once on a resume
Progress = Callable[[int, int, str], None]


@dataclass
class TrainerResult:
    model: Any
    history: list[dict[str, Any]]
    best: dict[str, float]
    loss: str  # the loss module the trainer ran, e.g. "MatryoshkaLoss(CoSENTLoss, dims=[384, 64])"
    columns: list[str]  # the training table's columns: hard negatives add negative_1..K
    rows: int  # rows trained on (mining drops pairs it finds no negative for)
    resumed_from: int | None  # the checkpoint step this invocation continued from
    trained_steps: tuple[int, int] | None  # first and last optimizer step of this invocation


def complete_checkpoint(p: Path) -> int | None:
    """The step of checkpoint folder `p` if it is complete: the trainer writes
    trainer_state.json last, so a checkpoint a kill (or a full disk) cut short has none,
    or a truncated one."""
    step = p.name.removeprefix("checkpoint-")
    try:
        state = json.loads((p / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return int(step) if step.isdigit() and state.get("global_step") == int(step) else None


def latest_checkpoint(work: Path) -> tuple[int, Path] | None:
    """The newest complete checkpoint; those cut short are passed over."""
    found: list[tuple[int, Path]] = []
    for p in work.glob("checkpoint-*"):
        step = complete_checkpoint(p)
        if step is not None:
            found.append((step, p))
    return max(found) if found else None


def describe_loss(loss: Any) -> str:
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss

    if isinstance(loss, MatryoshkaLoss):
        return f"MatryoshkaLoss({describe_loss(loss.loss)}, dims={list(loss.matryoshka_dims)})"
    return type(loss).__name__


def _loss(model: Any, name: str, matryoshka: list[int]) -> Any:
    from sentence_transformers.sentence_transformer import losses

    # With several processes each query is scored against every rank's passages (the
    # global batch), as one process with the whole batch would; gradients flow back.
    gather = distributed.world_size() > 1
    loss: Any
    if name == "mnrl":
        loss = losses.MultipleNegativesRankingLoss(model, gather_across_devices=gather)
    elif name == "cached-mnrl":
        loss = losses.CachedMultipleNegativesRankingLoss(
            model, mini_batch_size=16, gather_across_devices=gather
        )
    elif name == "triplet":
        loss = losses.TripletLoss(model)
    else:
        loss = losses.CoSENTLoss(model)
    if matryoshka:
        dims = sorted(set(matryoshka), reverse=True)
        loss = losses.MatryoshkaLoss(model, loss, matryoshka_dims=dims)
    return loss


def _progress_callback(progress: Progress | None) -> Any:
    from transformers import TrainerCallback

    class Report(TrainerCallback):
        last_loss: float | None = None
        first_step: int | None = None
        last_step: int | None = None

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                self.last_loss = float(logs["loss"])

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.first_step is None:
                self.first_step = state.global_step
            self.last_step = state.global_step
            if progress:
                loss = self.last_loss
                note = f"loss {loss:.4f}" if loss is not None else ""
                progress(state.global_step, state.max_steps, note)

    return Report()


def training_table(model: Any, params: Any, data: Any) -> Any:
    """The trainer's dataset: the data's columns, plus `negative_1..K` mined with the base
    model when hard negatives are asked for."""
    from datasets import Dataset

    ds = Dataset.from_dict(data.columns)
    if params.hard_negatives and data.kind == "pair":
        from sentence_transformers.util import mine_hard_negatives

        # relative_margin skips "negatives" scoring within 5% of the positive: those are
        # often other passages that answer the query too (false negatives).
        ds = mine_hard_negatives(
            ds,
            model,
            corpus=data.corpus,
            num_negatives=params.hard_negatives,
            relative_margin=0.05,
            sampling_strategy="top",
            output_format="n-tuple",
            batch_size=64,
            verbose=False,
        )
    return ds


def run_trainer(
    base: Entry,
    params: Any,
    data: Any,
    val: QADataset | None,
    loss_name: str,
    work: Path,
    progress: Progress | None,
) -> TrainerResult:
    import torch
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.evaluation import InformationRetrievalEvaluator
    from sentence_transformers.training_args import BatchSamplers

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    model = SentenceTransformer(str(base.model_path), device=device)
    model.max_seq_length = params.max_seq_length
    model.model_card_data.generate_widget_examples = False  # slow, and prints a progress bar
    ds = training_table(model, params, data)
    evaluator = None
    if val is not None and val.queries:
        evaluator = InformationRetrievalEvaluator(
            queries=val.queries,
            corpus=val.corpus,
            relevant_docs={q: set(d) for q, d in val.relevant_docs.items()},
            name=VAL_NAME,
            write_csv=False,
            batch_size=64,
        )
    steps_per_epoch = max(1, math.ceil(len(ds) / params.batch_size))
    total = max(1, math.ceil(steps_per_epoch * params.epochs))
    every = max(1, min(total, steps_per_epoch // max(1, params.evals_per_epoch)))
    # On GPUs bf16 autocast is the norm. On CPU we train in fp32: bf16 autocast was not
    # faster here and cost MRR@10 (0.9394 -> 0.9336 on XQuAD-en, same data and seed).
    if params.precision == "auto":
        bf16 = cuda and resolve_precision("auto", device) == "bf16"
    else:
        bf16 = params.precision == "bf16"
    args = SentenceTransformerTrainingArguments(
        output_dir=str(work),
        num_train_epochs=params.epochs,
        per_device_train_batch_size=params.batch_size,
        learning_rate=params.lr,
        warmup_steps=params.warmup_ratio,
        seed=params.seed,
        data_seed=params.seed,
        # several queries come from one passage: a duplicate passage in a batch would be a
        # false in-batch negative for MNRL
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        bf16=bf16,
        use_cpu=not cuda,
        eval_strategy="steps" if evaluator else "no",
        eval_steps=every,
        save_strategy="steps",
        save_steps=every,
        save_total_limit=2,
        load_best_model_at_end=evaluator is not None,
        metric_for_best_model=BEST_METRIC if evaluator else None,
        greater_is_better=True,
        logging_steps=max(1, every // 2),
        report_to="none",
        disable_tqdm=True,
        dataloader_drop_last=False,
    )
    report = _progress_callback(progress)
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=ds,
        loss=_loss(model, loss_name, params.matryoshka),
        evaluator=evaluator,
        callbacks=[report],
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # we show a progress bar; logs go to the entry
    resume = latest_checkpoint(work)
    if resume is not None and progress:
        progress(resume[0], total, f"{RESUMED}{resume[0]}")
    if evaluator is not None and resume is None:
        base_scores = evaluator(model)  # step 0: the base model, a checkpoint to beat
        trainer.state.log_history.append(
            {"step": 0, **{f"eval_{k}": v for k, v in base_scores.items()}}
        )
    trainer.train(resume_from_checkpoint=str(resume[1]) if resume else None)
    history = list(trainer.state.log_history)
    best: dict[str, float] = {}
    if evaluator is not None:
        final = evaluator(trainer.model)
        best = {k.removeprefix(f"{VAL_NAME}_"): float(v) for k, v in final.items()}
    steps = None
    if report.first_step is not None and report.last_step is not None:
        steps = (report.first_step, report.last_step)
    return TrainerResult(
        model=trainer.model,
        history=history,
        best=best,
        loss=describe_loss(trainer.loss),
        columns=list(ds.column_names),
        rows=len(ds),
        resumed_from=resume[0] if resume else None,
        trained_steps=steps,
    )
