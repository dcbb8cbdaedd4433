"""Choose the GGUF file the llama.cpp server loads for a registered LLM.

The bundled SmolLM2 ships as Q4_1. llama.cpp's CPU Q4_1 path (weights x activations
quantized to Q8_1) decodes that 135M model into nonsense ("What is the capital of
France?" -> "L'Étoile, la Marseillaise, ...") in llama-cpp-python 0.3.36 on this CPU,
while the same weights expanded to F16 answer correctly ("...is Paris."), as do the
dequantized weights under transformers. So a Q4_1 base is re-quantized once to F16 with
llama.cpp's own quantizer: identical weights, correct arithmetic, and at 135M still only
~260 MB and faster than Q4_1 here. tests/integration checks the answer.
"""

from __future__ import annotations

from pathlib import Path

from services.common.registry import Entry, Registry

# GGUF types whose CPU kernels we found wrong for small models; served as F16 instead.
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
