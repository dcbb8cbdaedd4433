"""Choose the GGUF file the llama.cpp server loads for a registered LLM.

The bundled SmolLM2 ships as Q4_1. Asked "What is the capital of France?", it answers
"L'Étoile, la Marseillaise, ..." under llama.cpp and "The capital of France is Paris." as
F16. That is not a broken kernel: the model is nearly tied at the first answer token
(transformers, fp32, same weights: "The" 0.152 vs "L" 0.140), and llama.cpp quantizes the
activations of every quantized matmul to 8 bits, which alone flips the tie (the same
activation rounding applied inside transformers gives "L" and the same words); q8_0 files
flip it too, and another llama.cpp build (xllamacpp) agrees. README, Models, has the
measurements. Where a greedy first token decides the answer, 16-bit weights are the fix,
so a Q4_1 base is re-quantized once to F16 with llama.cpp's own quantizer: identical
weights, ~260 MB, and faster than Q4_1 on this CPU. tests/integration checks the answer.
"""

from __future__ import annotations

from pathlib import Path

from services.common.errors import disk_full_names
from services.common.records import LlmRecord
from services.common.registry import Entry, Registry
from services.converter.quantize import quantize

# Bundled base types served as F16 (their 8-bit activation rounding flips near-ties).
SERVE_AS_F16 = frozenset({"q4_1"})


def servable_gguf(registry: Registry, name: str) -> tuple[Entry[LlmRecord], Path]:
    """The GGUF to serve `name` from, recorded as the record's `serve_path` (made once).

    `ensure`: the server's start-up provisions the bundled base when it is not yet.
    """
    entry: Entry[LlmRecord] = registry.ensure("llm", name)
    rec = entry.record
    if rec.serve_path and Path(rec.serve_path).is_file():
        return entry, Path(rec.serve_path)
    serve, note = entry.model_path, None
    quant = (rec.quant or "").lower()
    if quant in SERVE_AS_F16:
        serve = entry.dir / "gguf" / f"{entry.name}.f16.gguf"
        if not serve.is_file():
            with disk_full_names(serve.parent, registry.home):
                quantize(entry.model_path, serve, "f16")
        note = f"{quant} re-quantized to f16 for correct CPU decoding"

    def record_serve_path(r: LlmRecord) -> LlmRecord:
        r.serve_path = str(serve)
        if note is not None:
            r.serve_note = note
        return r

    return registry.update("llm", entry.name, record_serve_path), serve
