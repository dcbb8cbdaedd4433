"""Find the base model, make it trainable, and attach LoRA / freeze / full fine-tuning.

`model_name_or_path` may be a registry name (smollm2-135m-instruct), a local HF folder, a
local .gguf file, or the Hugging Face id of a model registered with `tunestack models pull
ORG/NAME` (nothing is downloaded while training or evaluating). A GGUF base is
dequantized by transformers into a normal HF model once and cached as safetensors beside
the registry entry (models/llm/<name>/hf/): the GGUF load takes ~15 s and ~1.2 GB, the
cached load under a second.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.common import atomic
from services.common.errors import BadInput, TunestackError
from services.common.hashing import file_sha256
from services.common.records import LlmRecord
from services.common.registry import Registry

if TYPE_CHECKING:
    from services.trainer.config import TrainConfig

log = logging.getLogger(__name__)
_QUANT_LINEAR = ("Linear4bit", "Linear8bitLt")  # bitsandbytes layers (QLoRA)


@dataclass
class BaseRef:
    """Where the trainable HF weights of a base model are, and what to call it."""

    name: str  # registry name or the path the user gave
    hf_dir: Path
    hf_id: str | None = None
    registered: bool = False


def _gguf_in(d: Path) -> Path | None:
    ggufs = sorted(d.glob("*.gguf"))
    return ggufs[0] if ggufs else None


def resolve_base(name_or_path: str, registry: Registry) -> BaseRef:
    """The trainable HF folder of a base model named by path or registry name.

    A registry name comes from the user (model_name_or_path, `llm eval/chat NAME`) or
    from a run's record, so a bundled base is provisioned here from its installed package
    (`Registry.ensure`, never a download) rather than failing on a fresh registry.
    """
    p = Path(name_or_path).expanduser()
    if p.exists():
        return _base_from_path(p, registry)
    entry = registry.ensure("llm", registry_name(name_or_path, registry))
    record: LlmRecord = entry.record
    if record.base_model:
        raise BadInput(
            f"'{name_or_path}' is a fine-tuned run, not a base model.",
            hint=f"Train from its base model: model_name_or_path: {record.base_model}",
        )
    mp = entry.model_path
    if mp.is_file() and mp.suffix == ".gguf":
        hf_dir = hf_from_gguf(mp, entry.dir / "hf")
    elif mp.is_dir() and (mp / "config.json").is_file():
        hf_dir = mp
    else:
        raise TunestackError(
            f"Registry entry '{entry.name}' points at {mp}, which is not loadable.",
            hint=f"Remove {entry.dir} and register the model again.",
        )
    return BaseRef(entry.name, hf_dir, record.hf_id, registered=True)


def registry_name(name: str, registry: Registry) -> str:
    """The registry name of a pulled Hugging Face model when `name` is its hub id, so a
    LLaMA-Factory YAML naming `Qwen/Qwen2.5-0.5B-Instruct` works once it was pulled; any
    other name as given. A bundled base (a quantized GGUF of that id) is not a match."""
    if "/" not in name:
        return name
    for row in registry.entries("llm"):
        rec = row.record
        if rec is not None and rec.hf_id == name and (rec.source or "").startswith("hf:"):
            return row.name
    return name


def _base_from_path(p: Path, registry: Registry) -> BaseRef:
    """An HF folder as is; a .gguf (or a folder holding one) dequantized once into a cache."""
    if p.is_dir() and (p / "config.json").is_file():
        return BaseRef(str(p), p.resolve())
    gguf = p if p.is_file() and p.suffix == ".gguf" else (_gguf_in(p) if p.is_dir() else None)
    if gguf is None:
        raise BadInput(
            f"{p} is neither a Hugging Face model folder (config.json) nor a .gguf file.",
            hint="Point model_name_or_path at an HF folder, a .gguf, or a registry name.",
        )
    cache = registry.home / "cache" / "hf-from-gguf" / file_sha256(gguf)[:16]
    return BaseRef(str(p), hf_from_gguf(gguf, cache))


def hf_from_gguf(gguf: Path, dest: Path) -> Path:
    """Dequantize a GGUF into an HF safetensors folder once; later calls just return it.

    Written to a temp folder and renamed, so a run killed mid-write leaves no half cache,
    and two runs racing to create it both end up using one complete copy.
    """
    if (dest / "config.json").is_file() and (dest / "model.safetensors").is_file():
        return dest
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("Dequantizing %s into a trainable HF model (once)...", gguf.name)
    atomic.sweep_stale(dest.parent)
    try:
        with atomic.staged_dir(dest) as tmp:
            # transformers draws bare tqdm bars per tensor here; keep the console clean.
            with contextlib.redirect_stderr(io.StringIO()):
                tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
                model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
                # The weights are now plain float tensors; drop the "quantized with gguf"
                # marks so save_pretrained writes them as an ordinary model.
                model.hf_quantizer = None  # type: ignore[assignment]
                model.is_quantized = False  # type: ignore[assignment]
                if hasattr(model.config, "quantization_config"):
                    del model.config.quantization_config
                model.save_pretrained(tmp)
                tok.save_pretrained(tmp)
            del model
            gc.collect()
    except FileExistsError:
        pass  # another process finished first; its copy is complete
    return dest


# ---- tokenizer and model -----------------------------------------------------------------


def load_tokenizer(hf_dir: Path | str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(hf_dir), trust_remote_code=trust_remote_code)
    if tok.pad_token is None:  # LLaMA-Factory does the same; pads are masked anyway
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


def has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def check_quantization(cfg: TrainConfig) -> None:
    """QLoRA needs a CUDA GPU and bitsandbytes; say so before anything heavy is loaded."""
    if not cfg.quantization_bit:
        return
    if not has_cuda():
        raise BadInput(
            f"quantization_bit: {cfg.quantization_bit} (QLoRA) needs a CUDA GPU, and none is "
            "available here.",
            hint="Remove quantization_bit to train plain LoRA on this machine "
            "(bitsandbytes' 4/8-bit training kernels are CUDA-only).",
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise BadInput(
            "quantization_bit needs the bitsandbytes package, which is not installed.",
            hint="pip install bitsandbytes (on the GPU machine).",
        )


def _attn_impl(cfg: TrainConfig) -> str | None:
    if cfg.flash_attn == "disabled":
        return "eager"
    if cfg.flash_attn == "sdpa":
        return "sdpa"
    if cfg.flash_attn == "fa2":
        if not has_cuda() or importlib.util.find_spec("flash_attn") is None:
            raise BadInput(
                "flash_attn: fa2 needs a CUDA GPU and the flash-attn package.",
                hint="Use flash_attn: auto (PyTorch SDPA).",
            )
        return "flash_attention_2"
    return None


def load_model_for_training(cfg: TrainConfig, hf_dir: Path) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    check_quantization(cfg)
    kwargs: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code}
    attn = _attn_impl(cfg)
    if attn:
        kwargs["attn_implementation"] = attn
    cuda = has_cuda()
    compute = torch.bfloat16 if cfg.bf16 else torch.float16 if cfg.fp16 else torch.float32
    # On a GPU the frozen weights live in the compute dtype (half the memory); on a CPU
    # they stay fp32 and bf16 runs as autocast, because CPU half-precision storage makes
    # the optimizer's fp32 master copies necessary anyway.
    kwargs["dtype"] = compute if cuda else torch.float32
    if cfg.quantization_bit:
        from transformers import BitsAndBytesConfig

        if cfg.quantization_bit == 4:
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_compute_dtype=compute if compute != torch.float32 else torch.bfloat16,
                bnb_4bit_use_double_quant=cfg.double_quantization,
                bnb_4bit_quant_type=cfg.quantization_type,
                bnb_4bit_quant_storage=compute if compute != torch.float32 else torch.bfloat16,
            )
        else:
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), **kwargs)
    model.config.use_cache = False  # the KV cache is useless (and costs memory) in training
    if cfg.quantization_bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.use_gradient_checkpointing
        )
    return apply_finetuning(model, cfg)


def load_reference_model(cfg: TrainConfig, hf_dir: Path) -> Any:
    """The frozen reference of dpo/kto: loaded like the policy, in eval mode, no gradients.

    Full precision on a CPU, the compute dtype on a GPU; never quantized (LLaMA-Factory's
    ref_model_quantization_bit is not supported) and never given an adapter.
    """
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code}
    attn = _attn_impl(cfg)
    if attn:
        kwargs["attn_implementation"] = attn
    compute = torch.bfloat16 if cfg.bf16 else torch.float16 if cfg.fp16 else torch.float32
    kwargs["dtype"] = compute if has_cuda() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), **kwargs)
    model.config.use_cache = False
    model.requires_grad_(False)
    return model.eval()


def apply_finetuning(model: Any, cfg: TrainConfig) -> Any:
    if cfg.finetuning_type == "lora":
        return apply_lora(model, cfg)
    if cfg.finetuning_type == "freeze":
        apply_freeze(model, cfg)
    # full: every parameter stays trainable
    if cfg.use_gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def linear_module_names(model: Any) -> list[str]:
    """Leaf names of every Linear layer except the output head (LLaMA-Factory's `all`)."""
    import torch

    names = set()
    for full, mod in model.named_modules():
        linear = isinstance(mod, torch.nn.Linear) or type(mod).__name__ in _QUANT_LINEAR
        if linear and "lm_head" not in full:
            names.add(full.split(".")[-1])
    return sorted(names)


def apply_lora(model: Any, cfg: TrainConfig) -> Any:
    from peft import LoraConfig, TaskType, get_peft_model

    available = linear_module_names(model)
    if cfg.lora_target.strip() == "all":
        targets = available
    else:
        targets = [t.strip() for t in cfg.lora_target.split(",") if t.strip()]
        missing = [t for t in targets if t not in available]
        if missing:
            raise BadInput(
                f"lora_target {missing} matches no linear layer of this model.",
                hint="Use lora_target: all, or some of: " + ", ".join(available),
            )
    extra = (
        [t.strip() for t in cfg.additional_target.split(",") if t.strip()]
        if cfg.additional_target
        else None
    )
    lora = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=cfg.lora_rank,
        lora_alpha=cfg.effective_lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        modules_to_save=extra,
    )
    if cfg.use_gradient_checkpointing and not cfg.quantization_bit:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return get_peft_model(model, lora)


def apply_freeze(model: Any, cfg: TrainConfig) -> None:
    """Train only the last (or, when negative, first) N decoder layers, as LLaMA-Factory."""
    n_layers = int(getattr(model.config, "num_hidden_layers", 0) or 0)
    if not n_layers:
        raise BadInput("finetuning_type: freeze needs a model with num_hidden_layers.")
    k = cfg.freeze_trainable_layers
    ids = range(n_layers - k, n_layers) if k > 0 else range(-k)
    wanted = {str(i) for i in ids}
    modules = (
        None
        if cfg.freeze_trainable_modules.strip() == "all"
        else [m.strip() for m in cfg.freeze_trainable_modules.split(",") if m.strip()]
    )
    trained = 0
    for name, param in model.named_parameters():
        parts = name.split(".")
        layer = next(
            (parts[i + 1] for i, p in enumerate(parts[:-1]) if p in ("layers", "h", "blocks")),
            None,
        )
        ok = layer in wanted and (modules is None or any(f".{m}." in f".{name}." for m in modules))
        param.requires_grad_(ok)
        trained += int(ok)
    if not trained:
        raise BadInput(
            "freeze_trainable_layers/modules select no parameters.",
            hint="Use freeze_trainable_modules: all, or module names like mlp,self_attn.",
        )


def trainable_parameters(model: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
