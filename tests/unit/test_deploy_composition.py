"""The deploy composition (services.converter.deploy.deploy) shared by the CLI and the
API's job: install on the server first, switch the RAG API second, record third, and undo
the switch when recording fails (the CLI did not, before the service layer).

The server and the switch are small in-test implementations of the two interfaces the
composition takes (ServingTarget, RagSwitch): what is tested is the order and the undo,
the real Ollama/llama.cpp targets and the real switch are tested in tests/integration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.common.api_schemas import LlmTargetInfo, SwitchResponse
from services.common.errors import TunestackError
from services.common.hashing import file_sha256
from services.common.records import ExportFile, ExportRun, LlmRecord
from services.common.registry import Entry, Registry
from services.converter import deploy as dep

OLD = LlmTargetInfo(base_url="http://old/v1", model="old")


class Server:
    name = "fake"

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def install(self, entry: Entry[LlmRecord], f: dep.DeployFile, model: str, say) -> dep.Installed:  # type: ignore[no-untyped-def]
        self.log.append(f"install {model} {f.quant}")
        return dep.Installed(to="fake", base_url="http://new/v1", response="hello", seconds=0.1)


class Switch:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def switch(self, model: str, base_url: str, run: str) -> SwitchResponse:
        self.log.append(f"switch {model}")
        return SwitchResponse(previous=OLD, current=LlmTargetInfo(base_url=base_url, model=model))

    def restore(self, previous: LlmTargetInfo) -> None:
        self.log.append(f"restore {previous.model}")


def exported_run(tmp_path: Path) -> Registry:
    reg = Registry(tmp_path)
    d = reg.entry_dir("llm", "run")
    (d / "gguf").mkdir(parents=True)
    gguf = d / "gguf" / "run.q8_0.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 60)
    f = ExportFile(
        quant="q8_0",
        path=str(gguf),
        file=gguf.name,
        size=gguf.stat().st_size,
        sha256=file_sha256(gguf),
        parity={"top1_agreement": 0.99, "threshold": 0.9, "ok": True},
        stop_check={"stopped": 6, "prompts": 6, "rate": 1.0, "ok": True},
        ok=True,
    )
    reg.write(
        LlmRecord(
            name="run",
            base_model="base",
            model_path=str(d),
            export=ExportRun(files={"q8_0": f}, ok=True),
        )
    )
    return reg


def test_deploy_installs_switches_then_records(tmp_path: Path) -> None:
    reg = exported_run(tmp_path)
    log: list[str] = []
    res = dep.deploy(reg, dep.DeploySpec("run", "q8_0", "tuned"), Server(log), Switch(log), print)
    assert log == ["install tuned q8_0", "switch tuned"]
    (d,) = reg.llm("run").record.deployments
    assert (d.to, d.name, d.base_url, d.quant) == ("fake", "tuned", "http://new/v1", "q8_0")
    assert res.switched is not None and res.switched.previous == OLD


def test_recording_failure_undoes_the_switch(tmp_path: Path) -> None:
    reg = exported_run(tmp_path)
    meta = reg.entry_dir("llm", "run") / "meta.json"
    log: list[str] = []

    class BrokenRegistry(Registry):
        def write(self, record, *, replace=False):  # type: ignore[no-untyped-def]
            raise OSError(28, "No space left on device")

    broken = BrokenRegistry(tmp_path)
    with pytest.raises(TunestackError) as e:
        dep.deploy(broken, dep.DeploySpec("run", "q8_0", "tuned"), Server(log), Switch(log), print)
    assert log == ["install tuned q8_0", "switch tuned", "restore old"]
    assert "went back to 'old'" in e.value.message and "tunestack llm deploy run" in str(
        e.value.hint
    )
    assert json.loads(meta.read_text())["deployments"] == []


def test_a_tampered_file_is_refused_before_anything_changes(tmp_path: Path) -> None:
    reg = exported_run(tmp_path)
    (reg.entry_dir("llm", "run") / "gguf" / "run.q8_0.gguf").write_bytes(b"GGUF" + b"\1" * 60)
    log: list[str] = []
    with pytest.raises(TunestackError, match="sha256"):
        dep.deploy(reg, dep.DeploySpec("run", "q8_0"), Server(log), Switch(log), print)
    assert log == []
