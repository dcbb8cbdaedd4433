"""llama.cpp's own conversion scripts, taken from the pinned llama-cpp-python sdist.

The converter (convert_hf_to_gguf.py with its conversion/ package and gguf-py) must match
the llama.cpp that serves the file: the same sdist we build llama-cpp-python from carries
exactly that revision under vendor/llama.cpp. `make setup` extracts the few files we need
after checking the sdist's sha256, so no llama.cpp code is ever copied into this
repository and a tampered or truncated download is refused.

    python -m services.converter.toolchain extract   # what `make setup` runs
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tarfile
from pathlib import Path

from services.common import atomic
from services.common.errors import TunestackError
from services.converter.settings import (
    LLAMA_CPP_SDIST_SHA256,
    LLAMA_CPP_VERSION,
    ConvertSettings,
)

# What we take from vendor/llama.cpp: the two converters, the package they import, gguf-py.
WANTED = (
    "convert_hf_to_gguf.py",
    "convert_lora_to_gguf.py",
    "conversion/",
    "gguf-py/",
    "LICENSE",
)
STAMP = ".extracted"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def extract(sdist: Path, dest: Path, expected_sha256: str = LLAMA_CPP_SDIST_SHA256) -> Path:
    """Check the sdist's hash, then unpack the conversion scripts into `dest` atomically."""
    if not sdist.is_file():
        raise TunestackError(
            f"The llama-cpp-python sdist is missing: {sdist}.",
            hint="Run `make setup` (it downloads and checksums the pinned sdist).",
        )
    got = sha256_file(sdist)
    if got != expected_sha256:
        raise TunestackError(
            f"{sdist.name} has sha256 {got}, expected {expected_sha256}.",
            hint=f"Delete {sdist} and run `make setup` to download it again.",
        )
    prefix = f"llama_cpp_python-{LLAMA_CPP_VERSION}/vendor/llama.cpp/"
    tmp = atomic.temp_sibling(dest)
    tmp.mkdir(parents=True)
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            members = []
            for m in tar.getmembers():
                if not m.name.startswith(prefix):
                    continue
                rel = m.name[len(prefix) :]
                wanted = any(rel == w or (w.endswith("/") and rel.startswith(w)) for w in WANTED)
                if wanted and (m.isfile() or m.isdir()):
                    m.name = rel
                    members.append(m)
            if not any(m.name == "convert_hf_to_gguf.py" for m in members):
                raise TunestackError(
                    f"{sdist.name} holds no vendor/llama.cpp/convert_hf_to_gguf.py.",
                    hint="The pinned sdist is not the expected one; run `make setup` again.",
                )
            tar.extractall(tmp, members=members, filter="data")
        (tmp / STAMP).write_text(f"{sdist.name} sha256={got}\n")
        atomic.swap_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def scripts_dir(s: ConvertSettings | None = None) -> Path:
    """The extracted vendor/llama.cpp folder; extracts it from the sdist when missing."""
    s = s or ConvertSettings()
    d = s.llama_cpp_scripts
    if (d / STAMP).is_file() and (d / "convert_hf_to_gguf.py").is_file():
        return d
    if s.llama_cpp_sdist.is_file():
        return extract(s.llama_cpp_sdist, d)
    raise TunestackError(
        f"llama.cpp's conversion scripts are not set up ({d} is missing).",
        hint="Run `make setup`, or set TUNESTACK_CONVERT_LLAMA_CPP_SCRIPTS to a folder with "
        "convert_hf_to_gguf.py from llama.cpp matching llama-cpp-python "
        f"{LLAMA_CPP_VERSION}.",
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m services.converter.toolchain")
    p.add_argument("command", choices=["extract", "where"])
    p.add_argument("--sdist", type=Path)
    p.add_argument("--dest", type=Path)
    args = p.parse_args(argv)
    s = ConvertSettings()
    try:
        if args.command == "extract":
            d = extract(args.sdist or s.llama_cpp_sdist, args.dest or s.llama_cpp_scripts)
        else:
            d = scripts_dir(s)
    except TunestackError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(d)
    return 0


if __name__ == "__main__":
    sys.exit(main())
