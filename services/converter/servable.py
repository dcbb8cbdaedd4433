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

from services.common.registry import Entry, Registry

# Bundled base types served as F16 (their 8-bit activation rounding flips near-ties).
SERVE_AS_F16 = frozenset({"q4_1"})


def servable_gguf(registry: Registry, name: str) -> tuple[Entry, Path]:
    entry = registry.get("llm", name)
    meta = entry.meta
    serve = meta.get("serve_path")
    if serve and Path(serve).is_file():
        return entry, Path(serve)
    src = Path(meta.get("serve_source") or entry.model_path)
    quant = str(meta.get("quant", "")).lower()
    if quant in SERVE_AS_F16:
        from services.converter.quantize import quantize

        dest = entry.dir / "gguf" / f"{entry.name}.f16.gguf"
        if not dest.is_file():
            quantize(src, dest, "f16")
        meta = {
            **meta,
            "serve_path": str(dest),
            "gguf": {**meta.get("gguf", {}), "f16": str(dest)},
            "serve_note": f"{quant} re-quantized to f16 for correct CPU decoding",
        }
    else:
        meta = {**meta, "serve_path": str(src)}
    entry = registry.write("llm", entry.name, meta, replace=True)
    return entry, Path(meta["serve_path"])
