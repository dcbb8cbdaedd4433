"""The pinned llama.cpp toolchain (checksum, what is extracted) and the Modelfile format."""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import pytest

from services.common.errors import BadInput, TunestackError
from services.common.records import ExportFile, ParityResult, StopCheck
from services.converter import modelfile as mf
from services.converter.export import parse_quants, parse_size
from services.converter.modelfiles import read_messages
from services.converter.parity import THRESHOLDS
from services.converter.quantize import FTYPES
from services.converter.settings import (
    LLAMA_CPP_SDIST_SHA256,
    LLAMA_CPP_VERSION,
    ConvertSettings,
)
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


def test_default_quants_and_their_gates() -> None:
    """`llm export` without --quant writes f16, q8_0 and q4_k_m (README), and every type the
    README names has its llama.cpp type and its parity threshold."""
    assert parse_quants(ConvertSettings.model_fields["quants"].default) == ["f16", "q8_0", "q4_k_m"]
    types = ("f16", "q8_0", "q4_k_m", "q5_k_m")
    assert {q: FTYPES[q] for q in types} == {"f16": 1, "q8_0": 7, "q4_k_m": 15, "q5_k_m": 17}
    assert {q: THRESHOLDS[q] for q in types} == {
        "f16": 0.98,
        "q8_0": 0.90,
        "q4_k_m": 0.75,
        "q5_k_m": 0.75,
    }


def test_messages_file(tmp_path: Path) -> None:
    f = tmp_path / "m.json"
    f.write_text(
        '[{"role": "user", "content": "Hi", "x": 1}, {"role": "assistant", "content": "Yo"}]'
    )
    assert read_messages(f) == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Yo"},
    ]
    for bad in ('{"role": "user"}', '[{"role": "bot", "content": "Hi"}]', "[{"):
        f.write_text(bad)
        with pytest.raises(BadInput, match="--messages"):
            read_messages(f)


def test_failed_gates_say_why() -> None:
    """What `llm export` prints and `llm deploy` refuses with: the check that failed."""
    low = ParityResult(top1_agreement=0.5, threshold=0.98, ok=False, tokenizer_match="2/2")
    split = ParityResult(top1_agreement=1.0, threshold=0.98, ok=False, tokenizer_match="1/2")
    fine = ParityResult(top1_agreement=1.0, threshold=0.98, ok=True, tokenizer_match="2/2")
    never = StopCheck(stopped=0, prompts=2, rate=0.0, ok=False)
    stops = StopCheck(stopped=2, prompts=2, rate=1.0, ok=True)
    assert low.problems() == ["parity 50.0% < 98%"]
    assert split.problems() == [
        "tokenizer: llama.cpp tokenizes 1/2 prompts as the HF tokenizer does"
    ]
    assert never.problems() == ["stopped at an end-of-turn token in 0/2 prompts (< 95%)"]
    assert fine.problems() == stops.problems() == []
    f = ExportFile(path="x", quant="f16", parity=fine, stop_check=never, ok=False)
    assert f.problems() == never.problems()
