"""Typed registry records: schema_version, migration of older meta.json files, one export
record, unknown fields kept, pure lookups and explicit registration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.common.errors import NotFound, TunestackError
from services.common.records import SCHEMA_VERSION, LlmRecord
from services.common.registry import Registry

EXPORT_FILE = {
    "quant": "q8_0",
    "path": "/x/gguf/run.q8_0.gguf",
    "file": "run.q8_0.gguf",
    "size": 5,
    "sha256": "ab" * 32,
    "parity": {"top1_agreement": 0.95, "threshold": 0.9, "ok": True, "tokenizer_match": "6/6"},
    "stop_check": {"stopped": 6, "prompts": 6, "rate": 1.0, "ok": True},
    "ok": True,
}


def _write(reg: Registry, kind: str, name: str, meta: dict) -> Path:
    d = reg.kind_dir(kind) / name  # type: ignore[arg-type]
    d.mkdir(parents=True)
    (d / "model").mkdir()
    (d / "meta.json").write_text(json.dumps(meta))
    return d


def test_schema_1_meta_migrates_to_one_export_record(tmp_path: Path) -> None:
    """An export recorded four ways (gguf, exports, parity, export.files) reads as one."""
    reg = Registry(tmp_path)
    d = _write(
        reg,
        "llm",
        "run",
        {
            "kind": "llm",
            "name": "run",
            "base_model": "smollm2-135m-instruct",
            "model_path": str(tmp_path / "models/llm/run/model"),
            "gguf": {"q8_0": EXPORT_FILE["path"]},
            "exports": [{"name": "q8_0", "path": EXPORT_FILE["path"], "parity": 0.95}],
            "parity": {"q8_0": {"top1_agreement": 0.95}},
            "export": {"files": {"q8_0": EXPORT_FILE}, "ok": True},
            "deployments": [{"to": "ollama", "model": "m", "base_url": "http://o/v1"}],
            "custom_field": {"kept": True},
        },
    )
    entry = reg.llm("run")
    rec = entry.record
    assert isinstance(rec, LlmRecord) and rec.schema_version == SCHEMA_VERSION
    assert rec.export is not None and rec.export.files["q8_0"].parity.top1_agreement == 0.95
    assert rec.deployments[0].name == "m"  # the old `model` key became `name`
    reg.write(rec, replace=True)
    stored = json.loads((d / "meta.json").read_text())
    assert not {"gguf", "exports", "parity"} & set(stored)
    assert stored["custom_field"] == {"kept": True}  # unknown fields survive a rewrite
    assert stored["schema_version"] == SCHEMA_VERSION


def test_a_record_that_breaks_the_schema_is_a_clear_error(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    _write(reg, "embedder", "bad", {"kind": "embedder", "name": "bad", "model_path": "x"})
    with pytest.raises(TunestackError) as e:
        reg.get("embedder", "bad")
    assert "fingerprint" in e.value.message and "registry schema" in e.value.message


def test_hub_ids_are_never_downloaded_by_a_lookup(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    with pytest.raises(NotFound) as e:
        reg.get("embedder", "BAAI/bge-small-zh-v1.5")
    assert "tunestack models pull BAAI/bge-small-zh-v1.5" in str(e.value.hint)
    with pytest.raises(NotFound) as e:
        reg.ensure("embedder", "BAAI/bge-small-zh-v1.5")
    with pytest.raises(NotFound, match="HF_HUB_OFFLINE"):
        reg.download("embedder", "BAAI/bge-small-zh-v1.5", offline=True)
    assert not (tmp_path / "models").exists()


def test_update_is_a_locked_read_modify_write(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    reg.provision("all-minilm-l6-v2")

    def bump(rec):  # type: ignore[no-untyped-def]
        rec.metrics["n"] = rec.metrics.get("n", 0) + 1
        return rec

    for _ in range(3):
        reg.update("embedder", "all-minilm-l6-v2", bump)
    assert reg.embedder("all-minilm-l6-v2").record.metrics["n"] == 3
