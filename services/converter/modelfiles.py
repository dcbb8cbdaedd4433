"""The Ollama Modelfiles an export writes: `Modelfile` (FROM the default GGUF type) and,
with --lora-gguf, `Modelfile.adapter` (FROM the base's served GGUF + ADAPTER).

The TEMPLATE is the run's chat template translated to Go (services.converter.ollama_template);
a template that cannot be translated is a warning, not a failure (deploy refuses Ollama for
it, llama.cpp reads the template from the GGUF). The Modelfile format itself is
services.converter.modelfile.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from services.common import atomic
from services.common.errors import BadInput
from services.converter import modelfile as mf
from services.converter.ollama_template import (
    GoTemplate,
    UntranslatableTemplate,
    as_dict,
    translate,
)
from services.trainer.inference import LoadedLLM

Say = Callable[[str], None]
DEFAULT_DEPLOY_QUANT = "q8_0"
ADAPTER_MODELFILE = "Modelfile.adapter"


@dataclass
class TurnTokens:
    """What the Modelfile needs from the tokenizer and template (kept past the HF model)."""

    bos_token: str
    eos_token: str
    stop_words: list[str]

    @classmethod
    def of(cls, llm: LoadedLLM) -> TurnTokens:
        return cls(
            llm.tokenizer.bos_token or "",
            llm.tokenizer.eos_token or "",
            list(llm.template.stop_words or []),
        )


@dataclass
class ModelfileSpec:
    """What goes into the export's Modelfiles, from the run's record and its tokenizer."""

    run: str
    chat_jinja: str
    tokens: TurnTokens
    system: str | None
    messages: list[dict[str, str]] = field(default_factory=list)


@dataclass
class AdapterSource:
    """Modelfile.adapter: the base's served GGUF plus the run's GGUF LoRA (in gguf/)."""

    base_gguf: Path
    lora_file: str


@dataclass
class Written:
    """The staged Modelfile(s) and how they were made (recorded as export.modelfile)."""

    fields: mf.Modelfile
    default_quant: str
    template: GoTemplate | None
    template_note: str | None
    adapter: bool  # Modelfile.adapter staged too

    def record(self, run_dir: Path) -> dict[str, Any]:
        return {
            "path": str(run_dir / "Modelfile"),
            "from": self.fields.from_,
            "default_quant": self.default_quant,
            "template": as_dict(self.template) if self.template else None,
            "template_note": self.template_note,
            "stop": self.fields.stops,
            "system": self.fields.system,
            "messages": len(self.fields.messages),
            "adapter_modelfile": str(run_dir / ADAPTER_MODELFILE) if self.adapter else None,
        }


def read_messages(path: Path | None) -> list[dict[str, str]]:
    """--messages: a JSON list of {role, content} (the Modelfile's MESSAGE examples)."""
    if path is None:
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BadInput(f"--messages {path} is not readable JSON: {e}") from e
    if not isinstance(data, list) or not all(
        isinstance(m, dict)
        and m.get("role") in ("user", "assistant", "system")
        and isinstance(m.get("content"), str)
        for m in data
    ):
        raise BadInput(
            f"--messages {path} must be a JSON list of {{role, content}} objects.",
            hint='e.g. [{"role": "user", "content": "Hi"}, {"role": "assistant", ...}]',
        )
    return [{"role": m["role"], "content": m["content"]} for m in data]


def default_quant(quants: list[str], ok_quants: list[str]) -> str:
    """The type the Modelfile names: q8_0 if it passed, else the first that passed."""
    if DEFAULT_DEPLOY_QUANT in ok_quants:
        return DEFAULT_DEPLOY_QUANT
    return ok_quants[0] if ok_quants else quants[0]


def go_template(spec: ModelfileSpec, say: Say) -> tuple[GoTemplate | None, str | None]:
    """The chat template in Go, or None and why not."""
    try:
        go = translate(
            spec.chat_jinja, bos_token=spec.tokens.bos_token, eos_token=spec.tokens.eos_token
        )
    except UntranslatableTemplate as e:
        say(f"  warning: {e.message}")
        return None, e.message
    return go, None


def write(
    stage: Path,
    spec: ModelfileSpec,
    quants: list[str],
    ok_quants: list[str],
    say: Say,
    *,
    adapter: AdapterSource | None = None,
) -> Written:
    """Stage `Modelfile` (and `Modelfile.adapter` when `adapter` is given) in `stage`."""
    go, note = go_template(spec, say)
    stops = list(go.stops) if go else []
    for w in spec.tokens.stop_words:
        if w not in stops:
            stops.append(w)
    default_q = default_quant(quants, ok_quants)
    header = (
        f"Written by tunestack llm export {spec.run}; deploy: tunestack llm deploy {spec.run}\n"
        f"Parity/stop checks: see meta.json (export.files)."
    )
    fields = mf.Modelfile(
        from_=f"./gguf/{spec.run}.{default_q}.gguf",
        template=go.template if go else None,
        system=spec.system,
        parameters={"stop": stops} if stops else {},
        messages=spec.messages,
    )
    atomic.write_text(stage / "Modelfile", mf.render(fields, header))
    if adapter is not None:
        afields = replace(
            fields, from_=str(adapter.base_gguf), adapters=[f"./gguf/{adapter.lora_file}"]
        )
        atomic.write_text(stage / ADAPTER_MODELFILE, mf.render(afields, header))
    return Written(fields, default_q, go, note, adapter=adapter is not None)
