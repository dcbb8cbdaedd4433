"""The training config: LLaMA-Factory's YAML keys, validated before anything is loaded.

Users arrive with LLaMA-Factory YAML files, so the keys, their meaning and their defaults
are LLaMA-Factory's (which are mostly Hugging Face TrainingArguments' defaults). A typo
must not be silently ignored, so an unknown key is an error that suggests the closest
known one; keys that only matter to LLaMA-Factory's own machinery (caching, workers,
timeouts) are accepted and reported as ignored.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from services.common.errors import BadInput

SUPPORTED_STAGES = ("sft", "pt", "dpo", "kto")
PREFERENCE_STAGES = ("dpo", "kto")
LATER_STAGES = ("rm", "ppo")
# LLaMA-Factory runs ORPO and SimPO as stage dpo with another pref_loss; say so.
LOSS_NAMED_AS_STAGE = ("orpo", "simpo")
REFERENCE_FREE_LOSSES = ("orpo", "simpo")
# LLaMA-Factory keys for methods this trainer does not implement: refused by name, with
# what to use instead, rather than as "unknown key".
UNSUPPORTED_KEYS = {
    "pref_bco_weight": "BCO mixing is not implemented; remove pref_bco_weight",
    "ld_alpha": "LD-DPO length weighting is not implemented; remove ld_alpha",
    "ref_model_adapters": "merge the adapter into the reference model first and point "
    "ref_model at the merged folder (tunestack llm export writes one: merged/)",
    "ref_model_quantization_bit": "the reference model is loaded unquantized; remove it",
}

# Keys LLaMA-Factory users commonly carry that change nothing here.
IGNORED_KEYS = frozenset(
    {
        "overwrite_cache",
        "preprocessing_num_workers",
        "use_fast_tokenizer",
        "cache_dir",
        "tokenized_path",
        "streaming",
        "buffer_size",
        "mix_strategy",
        "interleave_probs",
        "ignore_pad_token_for_loss",
        "upcast_layernorm",
        "print_param_status",
        "include_num_input_tokens_seen",
        "include_effective_tokens_per_second",
        "dataloader_pin_memory",
        "low_cpu_mem_usage",
        "enable_thinking",
    }
)


class TrainConfig(BaseModel):
    """Every key `tunestack llm train` understands, with LLaMA-Factory's defaults."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # ---- model ----
    model_name_or_path: str
    template: str | None = None
    default_system: str | None = None
    trust_remote_code: bool = False
    flash_attn: Literal["auto", "disabled", "sdpa", "fa2"] = "auto"

    # ---- method ----
    stage: str = "sft"
    do_train: bool = True
    finetuning_type: Literal["lora", "freeze", "full"] = "lora"
    lora_rank: int = 8
    lora_alpha: int | None = None  # None -> 2 * lora_rank, as LLaMA-Factory does
    lora_dropout: float = 0.0
    lora_target: str = "all"
    additional_target: str | None = None
    quantization_bit: int | None = None
    quantization_type: Literal["nf4", "fp4"] = "nf4"
    double_quantization: bool = True
    freeze_trainable_layers: int = 2
    freeze_trainable_modules: str = "all"

    # ---- dataset ----
    dataset: list[str] = []
    eval_dataset: list[str] = []
    dataset_dir: str = "data"
    cutoff_len: int = 2048
    max_samples: int | None = None
    val_size: float = 0.0
    packing: bool = False
    neat_packing: bool = False
    train_on_prompt: bool = False
    mask_history: bool = False
    group_by_length: bool = False

    # ---- output ----
    output_dir: str | None = None
    run_name: str | None = None
    logging_steps: float = 500
    save_steps: float = 500
    save_total_limit: int | None = None
    save_only_model: bool = False
    plot_loss: bool = True
    overwrite_output_dir: bool = False
    report_to: list[str] = ["none"]
    logging_dir: str | None = None

    # ---- train ----
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    learning_rate: float = 5e-5
    num_train_epochs: float = 3.0
    max_steps: int = -1
    lr_scheduler_type: str = "linear"
    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch"
    bf16: bool = False
    fp16: bool = False
    seed: int = 42
    # LLaMA-Factory turns gradient checkpointing on unless disable_gradient_checkpointing;
    # an explicit HF-style gradient_checkpointing key wins over both.
    disable_gradient_checkpointing: bool = False
    gradient_checkpointing: bool | None = None
    resume_from_checkpoint: bool | str | None = None
    dataloader_num_workers: int = 0

    # ---- several processes (launched with NPROC_PER_NODE / NNODES, as LLaMA-Factory) ----
    deepspeed: str | None = None  # a DeepSpeed JSON config (ZeRO-2/3): examples/deepspeed/
    fsdp: str = ""  # e.g. "full_shard auto_wrap", passed to TrainingArguments as is
    fsdp_config: str | None = None  # an FSDP JSON config: examples/fsdp/
    ddp_timeout: int = 180000000  # seconds; LLaMA-Factory's default (collectives wait long)
    ddp_find_unused_parameters: bool | None = None

    # ---- preference training (stage dpo / kto), LLaMA-Factory's names and defaults ----
    pref_beta: float = 0.1
    pref_ftx: float = 0.0
    pref_loss: Literal["sigmoid", "hinge", "ipo", "orpo", "simpo"] = "sigmoid"
    dpo_label_smoothing: float = 0.0
    simpo_gamma: float = 0.5
    kto_chosen_weight: float = 1.0
    kto_rejected_weight: float = 1.0
    ref_model: str | None = None

    # ---- eval ----
    eval_strategy: Literal["no", "steps", "epoch"] = "no"
    eval_steps: float | None = None
    # HF's key (LLaMA-Factory passes it through): one evaluation before the first step,
    # so the validation loss of the untrained model is in the log beside the trained one.
    eval_on_start: bool = False
    per_device_eval_batch_size: int = 8

    @field_validator("dataset", "eval_dataset", "report_to", mode="before")
    @classmethod
    def _comma_list(cls, v: Any) -> Any:
        if v is None:
            return []
        if isinstance(v, str):
            return [p.strip() for p in v.split(",") if p.strip()]
        return v

    @field_validator("stage")
    @classmethod
    def _stage(cls, v: str) -> str:
        if v in LOSS_NAMED_AS_STAGE:
            raise ValueError(f"'{v}' is a preference loss: use stage: dpo with pref_loss: {v}")
        if v in LATER_STAGES:
            raise ValueError(
                f"stage '{v}' is not supported yet; this trainer runs sft (supervised "
                "fine-tuning), pt (plain-text pre-training), dpo and kto (preferences)"
            )
        if v not in SUPPORTED_STAGES:
            raise ValueError(f"unknown stage '{v}'; use sft, pt, dpo or kto")
        return v

    @field_validator("eval_strategy", mode="before")
    @classmethod
    def _yaml_no(cls, v: Any) -> Any:
        return "no" if v is False else v  # YAML 1.1 reads an unquoted `no` as false

    @field_validator("pref_loss", mode="before")
    @classmethod
    def _pref_loss(cls, v: Any) -> Any:
        if v == "kto_pair":
            raise ValueError("kto_pair is gone from TRL; use stage: kto with kto_tag data")
        return v

    @field_validator("quantization_bit")
    @classmethod
    def _qbit(cls, v: int | None) -> int | None:
        if v not in (None, 4, 8):
            raise ValueError("quantization_bit must be 4 or 8 (QLoRA with bitsandbytes)")
        return v

    @field_validator("report_to")
    @classmethod
    def _report_to(cls, v: list[str]) -> list[str]:
        bad = [r for r in v if r not in ("none", "tensorboard")]
        if bad:
            raise ValueError(f"report_to {bad} is not supported; use none or tensorboard")
        return v or ["none"]

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if not self.do_train:
            raise ValueError("do_train: false; for evaluation use `tunestack llm eval`")
        if self.bf16 and self.fp16:
            raise ValueError("bf16 and fp16 are both true; pick one")
        if self.quantization_bit and self.finetuning_type != "lora":
            raise ValueError("quantization_bit (QLoRA) needs finetuning_type: lora")
        if self.neat_packing:
            raise ValueError(
                "neat_packing is not supported (it needs flash-attention varlen kernels); "
                "use packing: true"
            )
        if self.cutoff_len < 8:
            raise ValueError("cutoff_len must be at least 8 tokens")
        if self.val_size < 0 or (self.val_size >= 1 and not float(self.val_size).is_integer()):
            raise ValueError("val_size is a fraction in [0, 1) or a whole number of samples")
        if self.lora_rank < 1:
            raise ValueError("lora_rank must be >= 1")
        if not self.dataset:
            raise ValueError("no dataset given; set dataset: NAME[,NAME...] from dataset_info.json")
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise ValueError("set max_steps > 0 or num_train_epochs > 0")
        self._check_preference_keys()
        return self

    def _check_preference_keys(self) -> None:
        if self.pref_beta <= 0:
            raise ValueError("pref_beta must be > 0 (LLaMA-Factory's default is 0.1)")
        if not 0 <= self.dpo_label_smoothing < 0.5:
            raise ValueError("dpo_label_smoothing must be in [0, 0.5)")
        if self.dpo_label_smoothing and self.pref_loss != "sigmoid":
            raise ValueError("dpo_label_smoothing (conservative DPO) needs pref_loss: sigmoid")
        if self.kto_chosen_weight < 0 or self.kto_rejected_weight < 0:
            raise ValueError("kto_chosen_weight and kto_rejected_weight must be >= 0")
        if self.ref_model and self.stage not in PREFERENCE_STAGES:
            raise ValueError("ref_model is only used by stage dpo or kto")
        if self.ref_model and not self.use_ref_model:
            raise ValueError(
                f"pref_loss {self.pref_loss} needs no reference model; remove ref_model"
            )
        if self.stage in PREFERENCE_STAGES and (self.packing or self.group_by_length):
            raise ValueError(
                f"packing and group_by_length are for sft/pt; stage {self.stage} batches "
                "whole preference records"
            )

    @property
    def use_gradient_checkpointing(self) -> bool:
        if self.gradient_checkpointing is not None:
            return self.gradient_checkpointing
        return not self.disable_gradient_checkpointing

    @property
    def use_ref_model(self) -> bool:
        """LLaMA-Factory's rule: dpo (but not orpo/simpo) and kto compare to a reference."""
        if self.stage == "kto":
            return True
        return self.stage == "dpo" and self.pref_loss not in REFERENCE_FREE_LOSSES

    @property
    def effective_lora_alpha(self) -> int:
        return self.lora_alpha if self.lora_alpha is not None else self.lora_rank * 2

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`key=value` pairs from the command line; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise BadInput(
                f"'{pair}' is not a key=value override.",
                hint="Write overrides like max_steps=20 learning_rate=1.0e-4",
            )
        out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
    return out


def load_config(
    path: Path | None, overrides: dict[str, Any] | None = None
) -> tuple[TrainConfig, list[str]]:
    """Read a LLaMA-Factory style YAML, apply overrides, validate every key.

    Returns the config and the keys that were accepted but ignored.
    """
    data: dict[str, Any] = {}
    where = str(path) if path else "the command line"
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise BadInput(f"Config file {path} does not exist.") from e
        except yaml.YAMLError as e:
            raise BadInput(f"{path} is not valid YAML: {e}") from e
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise BadInput(
                f"{path} must be a mapping of keys to values, not {type(loaded).__name__}."
            )
        data.update(loaded)
    data.update(overrides or {})

    ignored = sorted(k for k in data if k in IGNORED_KEYS)
    for k in ignored:
        data.pop(k)
    unsupported = [k for k in data if k in UNSUPPORTED_KEYS]
    if unsupported:
        raise BadInput(
            f"Key(s) in {where} that this trainer does not support: "
            + "; ".join(f"'{k}': {UNSUPPORTED_KEYS[k]}" for k in unsupported),
            hint="Remove the key(s) named above.",
        )
    known = set(TrainConfig.model_fields)
    unknown = [k for k in data if k not in known]
    if unknown:
        lines = []
        for k in unknown:
            close = difflib.get_close_matches(k, known, n=1)
            lines.append(f"'{k}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise BadInput(
            f"Unknown key(s) in {where}: " + ", ".join(lines),
            hint="Keys follow LLaMA-Factory's YAML; see README 'LLM fine-tuning' for the list.",
        )
    # LLaMA-Factory accepts `dataset_dir: data` relative to where it runs; so do we.
    try:
        cfg = TrainConfig.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            key = ".".join(str(p) for p in err["loc"]) or "config"
            msg = str(err["msg"]).removeprefix("Value error, ")
            problems.append(f"{key}: {msg}")
        raise BadInput(
            f"Invalid training config in {where}: " + "; ".join(problems),
            hint="Fix the key(s) named above (YAML file or key=value override).",
        ) from e
    return cfg, ignored
