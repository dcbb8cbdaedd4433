"""One training run: validate, tokenize, train (resumable), save LLaMA-Factory's outputs,
register the result.

Output files in output_dir carry LLaMA-Factory's names (adapter_model.safetensors,
adapter_config.json, trainer_log.jsonl, training_loss.png, train_results.json,
all_results.json, trainer_state.json, training_args.yaml, checkpoint-N/), plus
data_order.jsonl: the sample ids of every micro-batch, which is how a resumed run is
checked to see the same data in the same order. The registry entry
(models/llm/<run>/meta.json) is written last, so a run is visible only once complete.
"""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.common import atomic, distributed
from services.common.errors import BadInput
from services.common.logs import quiet_libraries
from services.common.records import LlmRecord, now
from services.common.registry import BASE_MODELS, Registry, validate_name, versions
from services.common.torch_setup import configure_torch
from services.trainer import datasets as ds
from services.trainer.callbacks import (
    DATA_ORDER_NAME,
    LogCallback,
    ProgressCallback,
    StepReport,
    truncate_jsonl,
)
from services.trainer.config import PREFERENCE_STAGES, TrainConfig
from services.trainer.loss import label_only_loss, supports_label_only_logits
from services.trainer.model_loading import (
    BaseRef,
    check_quantization,
    has_cuda,
    load_model_for_training,
    load_tokenizer,
    resolve_base,
    trainable_parameters,
)
from services.trainer.plots import plot_loss
from services.trainer.pref_data import (
    FeedbackCollator,
    PairCollator,
    build_feedback_examples,
    build_pair_examples,
)
from services.trainer.pref_trainer import (
    load_reference,
    make_preference_trainer_class,
    pref_params,
)
from services.trainer.preprocess import (
    Example,
    ExampleDataset,
    PadCollator,
    PrepStats,
    TrainingSample,
    build_examples,
    pack_examples,
    split_validation,
)
from services.trainer.settings import TrainSettings
from services.trainer.templates import ChatTemplate, chat_format, resolve_template

CHECKPOINT_PREFIX = "checkpoint-"
Say = Callable[[str], None]
StepProgress = Callable[[int, int, str], None]  # (step, max_steps, message)
# The curves LLaMA-Factory's workflows plot for each stage (plus eval_loss when validating).
PLOTTED = {
    "dpo": ("loss", "rewards/accuracies", "eval_loss"),
    "kto": ("loss", "rewards/chosen", "eval_loss"),
}


@dataclass
class TrainResult:
    run_name: str
    output_dir: Path
    registry_dir: Path
    metrics: dict[str, Any]
    stats: PrepStats
    resumed_from: str | None = None
    ignored_keys: list[str] = field(default_factory=list)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- checkpoints ----------------------------------------------------------------------


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """checkpoint-N folders that were fully written, oldest first.

    The Trainer writes trainer_state.json last, non-atomically; a checkpoint whose state
    file is missing or torn (kill -9 during the save) is skipped, so resume falls back to
    the previous complete one instead of crashing on a half-written folder.
    """
    out: list[Path] = []
    if not output_dir.is_dir():
        return out
    for d in output_dir.iterdir():
        if not (d.is_dir() and d.name.startswith(CHECKPOINT_PREFIX)):
            continue
        suffix = d.name[len(CHECKPOINT_PREFIX) :]
        if not suffix.isdigit():
            continue
        try:
            state = json.loads((d / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if state.get("global_step") != int(suffix):
            continue
        out.append(d)
    return sorted(out, key=lambda d: int(d.name[len(CHECKPOINT_PREFIX) :]))


def _choose_resume(cfg: TrainConfig, output_dir: Path, say: Say) -> str | None:
    """LLaMA-Factory's rules: resume from the latest checkpoint, or refuse to clobber."""
    r = cfg.resume_from_checkpoint
    ckpts = complete_checkpoints(output_dir)
    if isinstance(r, str) and r.lower() not in ("true", "false"):
        p = Path(r)
        if p.name.isdigit() or r.isdigit():
            p = output_dir / f"{CHECKPOINT_PREFIX}{r}"
        if p.resolve() not in [c.resolve() for c in complete_checkpoints(p.parent)]:
            raise BadInput(
                f"resume_from_checkpoint: {r} is not a complete checkpoint folder.",
                hint="Use resume_from_checkpoint: true for the latest one in output_dir.",
            )
        return str(p)
    explicit = r is True or (isinstance(r, str) and r.lower() == "true")
    if explicit:
        if not ckpts:
            raise BadInput(
                f"resume_from_checkpoint: true, but {output_dir} has no complete checkpoint.",
                hint="Start without resume_from_checkpoint (checkpoints appear every save_steps).",
            )
        return str(ckpts[-1])
    if cfg.overwrite_output_dir:
        return None
    if ckpts and r is None:
        say(
            f"Resuming from {ckpts[-1].name} in {output_dir} "
            "(set overwrite_output_dir: true to start over)."
        )
        return str(ckpts[-1])
    if output_dir.is_dir() and any(not p.name.startswith(".") for p in output_dir.iterdir()):
        raise BadInput(
            f"Output directory {output_dir} already exists and is not empty.",
            hint="Set overwrite_output_dir: true, choose another output_dir/run_name, or "
            "resume_from_checkpoint: true.",
        )
    return None


# ---- name and preflight ----------------------------------------------------------------


def run_name_for(cfg: TrainConfig, config_path: Path | None) -> str:
    if cfg.run_name:
        name = cfg.run_name
    elif cfg.output_dir:
        name = Path(cfg.output_dir).resolve().name
    elif config_path is not None:
        name = config_path.stem
    else:
        name = f"{Path(cfg.model_name_or_path).name}-{cfg.finetuning_type}"
    validate_name(name)
    if name in BASE_MODELS:
        raise BadInput(
            f"Run name '{name}' is a base model's name.", hint="Set run_name to something else."
        )
    return name


def preflight(cfg: TrainConfig) -> None:
    """Failures that need no data or model: report them before anything slow happens."""
    check_quantization(cfg)
    if cfg.fp16 and not has_cuda():
        raise BadInput("fp16: true needs a CUDA GPU.", hint="Use bf16: true or neither on a CPU.")
    if "tensorboard" in cfg.report_to and importlib.util.find_spec("tensorboard") is None:
        raise BadInput(
            "report_to: tensorboard needs the tensorboard package.",
            hint="pip install tensorboard, or report_to: none.",
        )
    _check_sharding(cfg)


def _check_sharding(cfg: TrainConfig) -> None:
    """deepspeed: and fsdp: as LLaMA-Factory takes them; both shard over CUDA GPUs."""
    for key, value in (("deepspeed", cfg.deepspeed), ("fsdp_config", cfg.fsdp_config)):
        if value is None:
            continue
        path = Path(value).expanduser()
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise BadInput(
                f"{key}: {value} cannot be read ({e.strerror}).",
                hint="Point it at a JSON config, e.g. samples/distributed/ds_z3_config.json.",
            ) from e
        except ValueError as e:
            raise BadInput(f"{key}: {value} is not valid JSON ({e}).") from e
    if cfg.deepspeed and importlib.util.find_spec("deepspeed") is None:
        raise BadInput(
            "deepspeed: needs the deepspeed package (and CUDA GPUs).",
            hint="pip install deepspeed on the GPU machine, or remove the key for plain "
            "data-parallel training.",
        )
    if (cfg.deepspeed or cfg.fsdp) and not has_cuda():
        raise BadInput(
            ("deepspeed" if cfg.deepspeed else "fsdp") + ": shards over CUDA GPUs; this "
            "machine has none.",
            hint="Remove the key: plain data-parallel (NPROC_PER_NODE=2) runs on CPUs.",
        )


# ---- data ------------------------------------------------------------------------------


@dataclass
class PreparedData:
    """Tokenized, masked training (and validation) sequences and what was done to get them."""

    train: ExampleDataset
    val: ExampleDataset | None
    stats: PrepStats
    loaded: list[ds.LoadedDataset]
    template: ChatTemplate


def prepare_data(cfg: TrainConfig, tokenizer: Any, dataset_dir: Path, say: Say) -> PreparedData:
    template = resolve_template(cfg.template, tokenizer, cfg.default_system)
    loaded = ds.load_datasets(
        cfg.dataset, dataset_dir, stage=cfg.stage, max_samples=cfg.max_samples, seed=cfg.seed
    )
    stats = PrepStats()
    examples = _training_examples(cfg, loaded, tokenizer, template, stats)
    val: list[TrainingSample]
    if cfg.eval_dataset:
        val = _eval_dataset_examples(cfg, tokenizer, template, dataset_dir)
    else:
        examples, val = split_validation(examples, cfg.val_size, cfg.seed)
    if cfg.packing:  # sft/pt only (config refuses it for preference stages)
        sequences = [e for e in examples if isinstance(e, Example)]
        examples = list(pack_examples(sequences, cfg.cutoff_len))
    say(_data_summary(cfg, stats, len(examples), len(val)))
    return PreparedData(
        ExampleDataset(examples),
        ExampleDataset(val) if val else None,
        stats,
        loaded,
        template,
    )


def _stage_examples(
    cfg: TrainConfig,
    convs: list[ds.Conversation],
    tokenizer: Any,
    template: ChatTemplate,
    stats: PrepStats,
    first_id: int,
) -> list[TrainingSample]:
    """Token ids for one dataset: SFT/pt sequences, dpo pairs or kto answers."""
    if cfg.stage in PREFERENCE_STAGES:
        build = build_pair_examples if cfg.stage == "dpo" else build_feedback_examples
        return list(
            build(
                convs,
                tokenizer,
                template,
                cutoff_len=cfg.cutoff_len,
                stats=stats,
                first_id=first_id,
            )
        )
    return list(
        build_examples(
            convs,
            tokenizer,
            template,
            stage=cfg.stage,
            cutoff_len=cfg.cutoff_len,
            packing=False,
            train_on_prompt=cfg.train_on_prompt,
            mask_history=cfg.mask_history,
            stats=stats,
            first_id=first_id,
        )
    )


def _training_examples(
    cfg: TrainConfig,
    loaded: list[ds.LoadedDataset],
    tokenizer: Any,
    template: ChatTemplate,
    stats: PrepStats,
) -> list[TrainingSample]:
    """Every dataset's sequences, with sample ids numbered across datasets in order."""
    examples: list[TrainingSample] = []
    next_id = 0
    for d in loaded:
        stats.records += d.records
        stats.empty += d.empty
        exs = _stage_examples(cfg, d.conversations, tokenizer, template, stats, next_id)
        stats.per_dataset[d.attr.name] = len(d.conversations)
        next_id += len(d.conversations)
        examples += exs
    if not examples:
        raise BadInput(
            "No trainable samples are left after validation and cutoff_len.",
            hint=f"Empty: {stats.empty}, dropped at cutoff: {stats.dropped}. "
            "Raise cutoff_len or check the data.",
        )
    return examples


def _eval_dataset_examples(
    cfg: TrainConfig, tokenizer: Any, template: ChatTemplate, dataset_dir: Path
) -> list[TrainingSample]:
    """Validation sequences from `eval_dataset` (ids from 1,000,000: never a training id)."""
    eval_loaded = ds.load_datasets(
        cfg.eval_dataset,
        dataset_dir,
        stage=cfg.stage,
        max_samples=cfg.max_samples,
        seed=cfg.seed,
    )
    vstats = PrepStats()
    val: list[TrainingSample] = []
    for d in eval_loaded:
        val += _stage_examples(
            cfg.model_copy(update={"train_on_prompt": False, "mask_history": False}),
            d.conversations,
            tokenizer,
            template,
            vstats,
            1_000_000 + len(val),
        )
    return val


def _data_summary(cfg: TrainConfig, stats: PrepStats, n_train: int, n_val: int) -> str:
    unit = {"dpo": "preference pairs", "kto": "labelled answers"}.get(cfg.stage, "sequences")
    kto = (
        f" ({stats.desirable} desirable, {stats.undesirable} undesirable)"
        if cfg.stage == "kto"
        else ""
    )
    return (
        f"Data: {stats.records} records in {', '.join(cfg.dataset)}; "
        f"{stats.empty} empty (skipped), {stats.truncated} truncated to cutoff_len "
        f"{cfg.cutoff_len}, {stats.dropped} dropped (no response left); "
        f"{n_train} training {unit}{kto}"
        + (f", {n_val} validation" if n_val else "")
        + f"; {stats.label_tokens} of {stats.tokens} tokens trained."
    )


# ---- the trainer -----------------------------------------------------------------------


def make_trainer_class() -> Any:
    from transformers import Trainer

    class SFTTrainer(Trainer):
        """Records each micro-batch's sample ids and counts real (non-pad) tokens."""

        def __init__(
            self,
            *a: Any,
            data_order_path: Path | None = None,
            label_only_logits: bool = True,
            **kw: Any,
        ) -> None:
            super().__init__(*a, **kw)
            self.data_order_path = data_order_path
            self.real_tokens = 0
            self.padded_tokens = 0
            self.label_only = label_only_logits and supports_label_only_logits(self.model)

        def note_batch(self, model: Any, inputs: Any) -> None:
            """Pop the sample ids; when training, log them and count real tokens."""
            sample_ids = inputs.pop("sample_ids", None)
            if not model.training:
                return
            mask = inputs.get("attention_mask")
            if mask is not None:
                self.real_tokens += int(mask.sum())
                self.padded_tokens += int(mask.numel())
            if sample_ids is not None:
                ids = [int(i) for i in sample_ids.flatten().tolist() if i >= 0]
                # every rank's micro-batch, rank 0's first: the batch one process with
                # the combined batch size would have drawn
                ids = distributed.gather_lists(ids)
            if sample_ids is not None and self.data_order_path is not None:
                with self.data_order_path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps({"step": self.state.global_step + 1, "samples": ids}))
                    f.write("\n")

        def compute_loss(self, model: Any, inputs: Any, *a: Any, **kw: Any) -> Any:
            self.note_batch(model, inputs)
            return_outputs = kw.get("return_outputs", a[0] if a else False)
            if self.label_only and not return_outputs:
                return label_only_loss(model, inputs, kw.get("num_items_in_batch"))
            return super().compute_loss(model, inputs, *a, **kw)

        def prediction_step(self, model: Any, inputs: Any, *a: Any, **kw: Any) -> Any:
            inputs.pop("sample_ids", None)
            return super().prediction_step(model, inputs, *a, **kw)

    return SFTTrainer


def _training_arguments(cfg: TrainConfig, output_dir: Path, has_val: bool) -> Any:
    from transformers import TrainingArguments

    eval_strategy = cfg.eval_strategy if has_val else "no"
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_steps if cfg.warmup_steps else cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        optim=cfg.optim,
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        save_only_model=cfg.save_only_model,
        eval_strategy=eval_strategy,
        eval_steps=cfg.eval_steps if cfg.eval_steps else (cfg.save_steps if has_val else None),
        eval_on_start=cfg.eval_on_start and has_val,
        bf16=cfg.bf16,
        fp16=cfg.fp16,
        seed=cfg.seed,
        data_seed=cfg.seed,
        gradient_checkpointing=False,  # enabled on the model itself (LoRA needs input grads)
        report_to=[r for r in cfg.report_to if r != "none"] or "none",
        disable_tqdm=True,
        remove_unused_columns=False,
        label_names=["labels"],
        dataloader_num_workers=cfg.dataloader_num_workers,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        use_cpu=not has_cuda(),
        deepspeed=cfg.deepspeed,
        fsdp=cfg.fsdp,
        fsdp_config=cfg.fsdp_config,
        ddp_timeout=cfg.ddp_timeout,
        ddp_find_unused_parameters=cfg.ddp_find_unused_parameters,
    )


# ---- the run ---------------------------------------------------------------------------


def run_training(
    cfg: TrainConfig,
    settings: TrainSettings,
    *,
    config_path: Path | None = None,
    ignored_keys: list[str] | None = None,
    say: Say = print,
    progress: bool | None = None,
    on_step: StepProgress | None = None,
) -> TrainResult:
    """Validate, tokenize, train (resuming where a killed run stopped), write
    LLaMA-Factory's outputs, then register the run (last, so only a complete run is seen).
    """
    _setup_process(settings)
    if not distributed.is_main():  # rank 0 speaks for the run
        say = _silent
    registry = Registry(settings.home_dir)
    paths = _run_paths(cfg, registry, config_path)
    preflight(cfg)
    if ignored_keys:
        say("Ignored (no effect here): " + ", ".join(ignored_keys))
    resume = _resume_point(cfg, paths, say)
    distributed.barrier()  # every rank has chosen before rank 0 touches output_dir

    with distributed.main_first():  # a bundled base is provisioned into the registry once
        base = resolve_base(cfg.model_name_or_path, registry)
    tokenizer = load_tokenizer(base.hf_dir, cfg.trust_remote_code)
    data = prepare_data(cfg, tokenizer, paths.dataset_dir, say)
    if data.template.jinja is not None:  # keep the template used in training with the adapter
        tokenizer.chat_template = data.template.jinja
    if distributed.is_main():
        _prepare_output_dir(cfg, paths.output_dir, resume)
    distributed.barrier()
    order_path = paths.output_dir / DATA_ORDER_NAME
    model = _load_model(cfg, base, say)
    ref_model = load_reference(cfg, base, registry, model, say)

    trainer = _build_trainer(
        cfg, settings, model, tokenizer, data, paths.output_dir, order_path, progress, ref_model
    )
    if on_step is not None and distributed.is_main():
        trainer.add_callback(StepReport(on_step))
    metrics = _train(trainer, resume)
    eval_metrics = _save_outputs(trainer, cfg, paths.output_dir, metrics, data.val is not None)
    if distributed.is_main():
        record = _run_record(cfg, paths, base, data, metrics, eval_metrics, resume)
        registry.write(record, replace=True)
    return TrainResult(
        paths.run, paths.output_dir, paths.reg_dir, metrics, data.stats, resume, ignored_keys or []
    )


# ---- run_training's steps ----------------------------------------------------------------


@dataclass(frozen=True)
class RunPaths:
    run: str
    reg_dir: Path  # models/llm/<run>/: meta.json, and the outputs unless output_dir is set
    output_dir: Path
    dataset_dir: Path


def _silent(message: str) -> None:
    """What ranks other than 0 say: nothing (rank 0 reports for all)."""


def _setup_process(settings: TrainSettings) -> None:
    """Quiet libraries, size torch's thread pool before anything heavy is loaded, and join
    the process group when torchrun started this process."""
    quiet_libraries()
    configure_torch()
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers v6 renames
    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)
    distributed.start(settings)


def _run_paths(cfg: TrainConfig, registry: Registry, config_path: Path | None) -> RunPaths:
    run = run_name_for(cfg, config_path)
    reg_dir = registry.entry_dir("llm", run)
    sub = "adapter" if cfg.finetuning_type == "lora" else "model"
    output_dir = Path(cfg.output_dir).expanduser().resolve() if cfg.output_dir else reg_dir / sub
    dataset_dir = Path(cfg.dataset_dir).expanduser().resolve()
    return RunPaths(run, reg_dir, output_dir, dataset_dir)


def _resume_point(cfg: TrainConfig, paths: RunPaths, say: Say) -> str | None:
    """The checkpoint to resume from; a fresh run must not replace a registered one."""
    resume = _choose_resume(cfg, paths.output_dir, say)
    registered = (paths.reg_dir / "meta.json").is_file()
    if resume is None and registered and not cfg.overwrite_output_dir:
        raise BadInput(
            f"A run named '{paths.run}' is already registered ({paths.reg_dir}).",
            hint="Set run_name to a new name, or overwrite_output_dir: true to replace it.",
        )
    return resume


def _prepare_output_dir(cfg: TrainConfig, output_dir: Path, resume: str | None) -> None:
    """Create (or clear) output_dir, write training_args.yaml, and cut data_order.jsonl
    back to the resumed checkpoint (rank 0's work)."""
    if resume is None and output_dir.exists() and cfg.overwrite_output_dir:
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(output_dir / "training_args.yaml", cfg.to_yaml())
    order_path = output_dir / DATA_ORDER_NAME
    if resume is None:
        order_path.unlink(missing_ok=True)
    else:
        step = int(Path(resume).name[len(CHECKPOINT_PREFIX) :])
        truncate_jsonl(order_path, "step", step)


def _load_model(cfg: TrainConfig, base: BaseRef, say: Say) -> Any:
    from transformers import set_seed

    # Seed before the adapter exists: LoRA's A matrices are drawn at creation, and the
    # Trainer only seeds later, so without this two runs of one config start apart.
    set_seed(cfg.seed)
    model = load_model_for_training(cfg, base.hf_dir)
    trainable, total = trainable_parameters(model)
    say(
        f"Model: {base.name} ({cfg.finetuning_type}"
        + (f", {cfg.quantization_bit}-bit" if cfg.quantization_bit else "")
        + f"): {trainable:,} of {total:,} parameters trainable "
        f"({100 * trainable / max(total, 1):.2f}%)."
    )
    return model


def _build_trainer(
    cfg: TrainConfig,
    settings: TrainSettings,
    model: Any,
    tokenizer: Any,
    data: PreparedData,
    output_dir: Path,
    order_path: Path,
    progress: bool | None,
    ref_model: Any = None,
) -> Any:
    """Our Trainer with our progress and log callbacks in place of transformers' own."""
    from transformers.trainer_callback import PrinterCallback
    from transformers.trainer_callback import ProgressCallback as HFProgress

    trainer_cls = make_trainer_class()
    collator: Any = PadCollator(tokenizer.pad_token_id)
    extra: dict[str, Any] = {}
    if cfg.stage in PREFERENCE_STAGES:
        trainer_cls = make_preference_trainer_class(trainer_cls)
        pad = tokenizer.pad_token_id
        collator = PairCollator(pad) if cfg.stage == "dpo" else FeedbackCollator(pad)
        extra = {
            "stage": cfg.stage,
            "params": pref_params(cfg),
            "use_ref": cfg.use_ref_model,
            "ref_model": ref_model,
        }
    args = _training_arguments(cfg, output_dir, data.val is not None)
    main = distributed.is_main()
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.val,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=[LogCallback(output_dir), ProgressCallback(progress)] if main else [],
        data_order_path=order_path if main else None,
        # The label-only head calls the decoder inside the DDP wrapper, which would skip
        # DDP's gradient sync: with several processes the stock forward runs instead.
        label_only_logits=settings.label_only_logits and distributed.world_size() == 1,
        **extra,
    )
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(HFProgress)
    if "tensorboard" in cfg.report_to:
        _attach_tensorboard(trainer, cfg, output_dir)
    return trainer


def _attach_tensorboard(trainer: Any, cfg: TrainConfig, output_dir: Path) -> None:
    """transformers 5 takes the TensorBoard folder only from the environment; hand the
    callback its writer instead (default folder: output_dir/runs, as before)."""
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    trainer.remove_callback(TensorBoardCallback)
    logdir = Path(cfg.logging_dir).expanduser() if cfg.logging_dir else output_dir / "runs"
    trainer.add_callback(TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(logdir))))


def _train(trainer: Any, resume: str | None) -> dict[str, Any]:
    """Train (from `resume` if set) and return train_results.json's metrics."""
    t0, cpu0 = time.monotonic(), time.process_time()
    result = trainer.train(resume_from_checkpoint=resume)
    wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    return _train_metrics(trainer, dict(result.metrics), wall, cpu)


def _train_metrics(
    trainer: Any, metrics: dict[str, Any], wall: float, cpu: float
) -> dict[str, Any]:
    """The Trainer's metrics plus throughput, padding, memory and first/last loss."""
    metrics["global_step"] = trainer.state.global_step
    runtime = float(metrics.get("train_runtime") or wall)
    # every process's tokens (and CPU time): the run's throughput, not rank 0's share
    real = distributed.sum_int(trainer.real_tokens)
    padded = distributed.sum_int(trainer.padded_tokens)
    cpu = distributed.sum_int(round(cpu * 1000)) / 1000
    metrics["train_processes"] = distributed.world_size()
    metrics["train_tokens"] = real
    metrics["train_tokens_per_second"] = round(real / runtime, 2) if runtime else 0
    # CPU seconds are what a shared machine cannot inflate: tokens per CPU-second compares
    # methods fairly even when other processes take the cores (wall-clock tokens/s cannot).
    metrics["train_cpu_seconds"] = round(cpu, 1)
    metrics["train_tokens_per_cpu_second"] = round(real / cpu, 2) if cpu else 0
    metrics["train_padding_ratio"] = round(1 - real / padded, 4) if padded else 0
    metrics["peak_rss_mb"] = round(peak_rss_mb(), 1)
    if distributed.world_size() > 1:  # the machine's cost: every process's peak, summed
        metrics["peak_rss_mb_all_processes"] = distributed.sum_int(round(peak_rss_mb()))
    metrics["label_only_logits"] = trainer.label_only
    if has_cuda():
        import torch

        metrics["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    if losses:
        metrics["first_logged_loss"], metrics["last_logged_loss"] = losses[0], losses[-1]
    return metrics


def _save_outputs(
    trainer: Any, cfg: TrainConfig, output_dir: Path, metrics: dict[str, Any], has_val: bool
) -> dict[str, Any]:
    """The adapter/model, *_results.json, trainer_state.json and the loss plots, under
    LLaMA-Factory's names. Returns the validation metrics (empty without validation)."""
    _save_final_model(trainer, output_dir)
    trainer.save_metrics("train", metrics)
    eval_metrics: dict[str, Any] = {}
    if has_val:
        eval_metrics = trainer.evaluate()
        trainer.save_metrics("eval", eval_metrics)
    trainer.save_state()
    if cfg.plot_loss and distributed.is_main():
        plot_loss(
            output_dir, trainer.state.log_history, PLOTTED.get(cfg.stage, ("loss", "eval_loss"))
        )
    return eval_metrics


def _run_record(
    cfg: TrainConfig,
    paths: RunPaths,
    base: BaseRef,
    data: PreparedData,
    metrics: dict[str, Any],
    eval_metrics: dict[str, Any],
    resume: str | None,
) -> LlmRecord:
    """The registry record of a finished run: what it was trained from, on and how."""
    out = str(paths.output_dir)
    return LlmRecord(
        name=paths.run,
        base_model=base.name,
        base_hf_id=base.hf_id,
        base_model_path=str(base.hf_dir),
        source="tunestack llm train",
        stage=cfg.stage,
        finetuning_type=cfg.finetuning_type,
        model_path=out,
        adapter_path=out if cfg.finetuning_type == "lora" else None,
        output_dir=out,
        template=data.template.name,
        default_system=cfg.default_system,
        chat_format=chat_format(data.template),
        stop_words=data.template.stop_words,
        data_hash=ds.data_hash(data.loaded),
        data={
            "datasets": cfg.dataset,
            "dataset_dir": str(paths.dataset_dir),
            "stats": data.stats.to_dict(),
            "train_sequences": len(data.train),
            "validation_sequences": len(data.val) if data.val is not None else 0,
        },
        parameters=cfg.model_dump(mode="json"),
        metrics={"train": metrics, **({"eval": eval_metrics} if eval_metrics else {})},
        resumed_from=resume,
        created=now(),
        versions=versions(),
    )


def _save_final_model(trainer: Any, output_dir: Path) -> None:
    """Write the adapter (or model) beside the logs, each file appearing atomically.

    Every rank calls save_model (ZeRO-3 and FSDP gather the shards there); rank 0 alone
    writes, into one staging folder whose name all ranks agree on.
    """
    with_tmp = output_dir / ".final"
    main = distributed.is_main()
    if main:
        shutil.rmtree(with_tmp, ignore_errors=True)
        with_tmp.mkdir()
    distributed.barrier()
    try:
        trainer.save_model(str(with_tmp))
        distributed.barrier()
        if main:
            for f in sorted(with_tmp.iterdir()):
                os.replace(f, output_dir / f.name)
    finally:
        if main:
            shutil.rmtree(with_tmp, ignore_errors=True)
