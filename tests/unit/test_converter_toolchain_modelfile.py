"""The pinned llama.cpp toolchain (checksum, what is extracted) and the Modelfile format."""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import pytest

from services.common.errors import TunestackError
from services.converter import modelfile as mf
from services.converter.export import parse_quants, parse_size
from services.converter.settings import LLAMA_CPP_SDIST_SHA256, LLAMA_CPP_VERSION
from services.converter.toolchain import extract, sha256_file
from tests.conftest import ROOT


def test_makefile_pins_the_same_sdist() -> None:
    mk = (ROOT / "Makefile").read_text()
    assert re.search(rf"LLAMA_CPP_SHA256\s*:=\s*{LLAMA_CPP_SDIST_SHA256}", mk)
    assert re.search(rf"LLAMA_CPP_VERSION\s*:=\s*{re.escape(LLAMA_CPP_VERSION)}", mk)
    assert "services.converter.toolchain extract" in mk


def _fake_sdist(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"llama_cpp_python-{LLAMA_CPP_VERSION}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_extract_checks_hash_and_takes_only_the_converter(tmp_path: Path) -> None:
    sdist = _fake_sdist(
        tmp_path / "s.tar.gz",
        {
            "vendor/llama.cpp/convert_hf_to_gguf.py": b"print('x')\n",
            "vendor/llama.cpp/conversion/base.py": b"",
            "vendor/llama.cpp/gguf-py/gguf/__init__.py": b"",
            "vendor/llama.cpp/ggml/src/ggml.c": b"int x;",
            "llama_cpp/llama.py": b"",
        },
    )
    with pytest.raises(TunestackError, match="sha256"):
        extract(sdist, tmp_path / "out", expected_sha256="0" * 64)
    assert not (tmp_path / "out").exists()
    out = extract(sdist, tmp_path / "out", expected_sha256=sha256_file(sdist))
    got = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert got == [
        ".extracted",
        "conversion/base.py",
        "convert_hf_to_gguf.py",
        "gguf-py/gguf/__init__.py",
    ]


def test_modelfile_round_trip() -> None:
    m = mf.Modelfile(
        from_="./gguf/run.q8_0.gguf",
        template="{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}"
        "<|im_end|>\n{{ end }}",
        system="You are Lumen Assistant.\nBe brief.",
        parameters={"stop": ["<|im_end|>", "<|endoftext|>"], "num_ctx": [4096]},
        messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
        adapters=["./gguf/run.lora.f16.gguf"],
    )
    text = mf.render(m, "header line")
    assert text.startswith("# header line\nFROM ./gguf/run.q8_0.gguf\nADAPTER ")
    assert 'PARAMETER stop "<|im_end|>"\nPARAMETER stop "<|endoftext|>"' in text
    back = mf.parse(text)
    assert back == m
    assert back.api_parameters() == {"stop": ["<|im_end|>", "<|endoftext|>"], "num_ctx": 4096}
    with pytest.raises(TunestackError):
        mf.render(mf.Modelfile(from_="x", system='say """hi"""'))


def test_quant_and_size_options() -> None:
    assert parse_quants("F16, q8_0,q4_k_m,q8_0") == ["f16", "q8_0", "q4_k_m"]
    with pytest.raises(TunestackError, match="Unknown GGUF type"):
        parse_quants("q3_x")
    assert parse_size("2gb") == "2GB"
    with pytest.raises(TunestackError):
        parse_size("lots")
