"""Load a registered LLM (a base, or a base plus its trained adapter) for generation.

`llm eval` and `llm chat` share this, so a run is always prompted with the template and
system prompt it was trained with (both recorded in its meta.json), and a base model and
a tuned run are compared under identical settings.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.errors import BadInput
from services.common.records import LlmRecord
from services.common.registry import Entry, Registry
from services.common.torch_setup import configure_torch
from services.trainer.datasets import Message
from services.trainer.model_loading import load_tokenizer, registry_name, resolve_base
from services.trainer.templates import ChatTemplate, resolve_template


@dataclass
class LoadedLLM:
    name: str
    model: Any
    tokenizer: Any
    template: ChatTemplate
    record: LlmRecord | None  # None when loaded from a path rather than the registry
    is_base: bool

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device


def load_llm(
    name: str,
    registry: Registry,
    *,
    template: str | None = None,
    system: str | None = None,
    threads: int | None = None,
) -> LoadedLLM:
    """A base model by registry name/path, or a trained run with its adapter merged in.

    The adapter is merged into the in-memory weights (merge_and_unload): generation then
    runs at the base model's speed, and the files on disk are untouched. The user named
    `name` (eval, chat, export), so a bundled base is provisioned if it is not yet
    (`Registry.ensure`; never a download).
    """
    import torch

    configure_torch()
    if threads:
        torch.set_num_threads(threads)
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers v6 renames
    entry = None if Path(name).exists() else registry.ensure("llm", registry_name(name, registry))
    record: LlmRecord | None = entry.record if entry is not None else None
    if entry is not None and record is not None and record.base_model:
        model, tokenizer = _load_run(entry, record, registry)
        tmpl = resolve_template(
            template or _template_name(record), tokenizer, system or record.default_system
        )
        is_base = False
    else:
        base = resolve_base(name, registry)
        tokenizer = load_tokenizer(base.hf_dir)
        model = _from_pretrained(base.hf_dir)
        tmpl = resolve_template(template, tokenizer, system)
        is_base = True
    model.to(_device())
    model.eval()
    return LoadedLLM(name, model, tokenizer, tmpl, record, is_base)


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _from_pretrained(path: Path) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)


def _load_run(entry: Entry[LlmRecord], record: LlmRecord, registry: Registry) -> tuple[Any, Any]:
    """A trained run's model (base + merged adapter, or its full weights) and tokenizer."""
    base_dir = Path(str(record.base_model_path or ""))
    if not (base_dir / "config.json").is_file():
        base_dir = resolve_base(str(record.base_model), registry).hf_dir
    run_dir = Path(str(record.output_dir or entry.model_path))
    tokenizer = load_tokenizer(
        run_dir if (run_dir / "tokenizer_config.json").is_file() else base_dir
    )
    if (record.finetuning_type or "lora") == "lora":
        from peft import PeftModel

        model = PeftModel.from_pretrained(_from_pretrained(base_dir), str(run_dir))
        return model.merge_and_unload(), tokenizer
    return _from_pretrained(run_dir), tokenizer


def _template_name(record: LlmRecord) -> str | None:
    t = record.template
    return None if t in (None, "default") else str(t)


def generate(
    llm: LoadedLLM,
    prompts: list[str],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    streamer: Any = None,
) -> list[tuple[str, str]]:
    """Continue each prompt; returns (text, stop reason) with reason 'stop' or 'length'.

    Generation ends at the template's end-of-turn tokens (and eos); end markers that are
    not single tokens in this vocabulary are matched as text and cut off.
    """
    import torch

    tok = llm.tokenizer
    tok.padding_side = "left"
    try:
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tok.padding_side = "right"
    enc = {k: v.to(llm.device) for k, v in enc.items()}
    stop_ids = llm.template.stop_token_ids(tok)
    stop_strings = llm.template.stop_strings(tok)
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "eos_token_id": stop_ids or None,
        "pad_token_id": tok.pad_token_id,
        "do_sample": temperature > 0,
    }
    if temperature > 0:
        kwargs.update(temperature=temperature, top_p=top_p)
    else:  # greedy: silence "temperature is set but do_sample=False" from generation_config
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if stop_strings:
        kwargs.update(stop_strings=stop_strings, tokenizer=tok)
    if streamer is not None:
        kwargs["streamer"] = streamer
    with torch.inference_mode():
        out = llm.model.generate(**enc, **kwargs)
    results = []
    width = enc["input_ids"].shape[1]
    for row in out:
        new = row[width:].tolist()
        stopped = False
        for i, t in enumerate(new):
            if t in stop_ids:
                new, stopped = new[:i], True
                break
        text = tok.decode(new, skip_special_tokens=True)
        for s in stop_strings:
            if s in text:
                text, stopped = text[: text.index(s)], True
        results.append((text.strip(), "stop" if stopped else "length"))
    return results


def prompt_for(
    llm: LoadedLLM, messages: list[Message], system: str | None, tools: Any = None
) -> str:
    if messages and messages[-1].role == "assistant":
        raise BadInput("The last message of a prompt must not be the assistant's.")
    return llm.template.prompt_text(llm.tokenizer, messages, system, tools)
