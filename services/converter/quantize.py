"""Quantize or re-quantize GGUF files with llama.cpp's own quantizer (via llama-cpp-python)."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from services.common.errors import DISK_FULL_TEXT, DiskFull, TunestackError, nearly_full
from services.common.fdcapture import capture_stderr

# llama.cpp's enum llama_ftype values for the types we write.
FTYPES: dict[str, int] = {
    "f32": 0,
    "f16": 1,
    "q4_0": 2,
    "q4_1": 3,
    "q8_0": 7,
    "q5_0": 8,
    "q5_1": 9,
    "q4_k_m": 15,
    "q5_k_m": 17,
    "q6_k": 18,
    "bf16": 32,
}


def quantize(src: Path, dest: Path, ftype: str, *, threads: int | None = None) -> Path:
    """Write `dest` as `ftype`; allows re-quantizing an already quantized file.

    Written to a temp name and renamed, so a killed run never leaves a truncated GGUF
    where a server could pick it up.
    """
    import llama_cpp

    if ftype not in FTYPES:
        raise TunestackError(
            f"Unknown GGUF type '{ftype}'.", hint="Use one of " + ", ".join(FTYPES)
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[ftype]
    params.allow_requantize = True
    params.nthread = threads or (os.cpu_count() or 1)
    with capture_stderr() as log:
        rc = llama_cpp.llama_model_quantize(
            str(src).encode(), str(tmp).encode(), ctypes.byref(params)
        )
    if rc != 0 or not tmp.exists():
        # looked at before the partial file goes: the room left is the evidence
        full = nearly_full(dest.parent) or any(t in log.tail().lower() for t in DISK_FULL_TEXT)
        tmp.unlink(missing_ok=True)
        if full:
            raise DiskFull()  # the export names the folder
        raise TunestackError(
            f"llama.cpp could not quantize {src} to {ftype} (code {rc}).\n{log.tail()}",
            hint="Check free disk space and that the input is a valid GGUF.",
        )
    os.replace(tmp, dest)
    return dest
