"""The API's job manager and artifact rules, without a server."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from services.common.errors import BadInput, NotFound
from services.common.records import LlmRecord
from services.rag_api import artifacts, registry_views
from services.rag_api.jobs import JobManager, Progress


def wait_done(m: JobManager, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while (info := m.get(job_id))["status"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return info


def test_jobs_run_in_order_report_progress_and_results() -> None:
    m = JobManager()
    gate = threading.Event()

    def slow(p: Progress) -> dict[str, Any]:
        p(1, 4, "one of four")
        gate.wait(5)
        p(4, 4, "all")
        return {"answer": 42}

    first = m.submit("eval", {"n": 1}, slow)
    second = m.submit("eval", {"n": 2}, lambda p: {"answer": 0})
    time.sleep(0.1)
    info = m.get(first.id)
    assert info["status"] == "running" and info["progress"] == 0.25
    assert info["message"] == "one of four"
    assert m.get(second.id)["status"] == "queued"  # one worker: jobs run in order
    gate.set()
    done = wait_done(m, first.id)
    assert done["status"] == "done" and done["result"] == {"answer": 42}
    assert done["progress"] == 1.0 and done["finished"] >= done["started"]
    assert wait_done(m, second.id)["status"] == "done"
    assert [j["id"] for j in m.list()] == [second.id, first.id]  # newest first
    m.shutdown()


def test_job_failures_carry_message_and_hint_never_a_traceback() -> None:
    m = JobManager()

    def known(p: Progress) -> dict[str, Any]:
        raise BadInput("The dataset has no queries.", hint="Add some.")

    def unknown(p: Progress) -> dict[str, Any]:
        raise ZeroDivisionError("division by zero")

    a = wait_done(m, m.submit("eval", {}, known).id)
    assert a["status"] == "failed" and a["error"] == {
        "error": "BadInput",
        "message": "The dataset has no queries.",
        "hint": "Add some.",
    }
    b = wait_done(m, m.submit("eval", {}, unknown).id)
    assert b["status"] == "failed" and b["error"]["error"] == "InternalError"
    assert "ZeroDivisionError" in b["error"]["message"] and "log" in b["error"]["hint"]
    with pytest.raises(NotFound):
        m.get("nope")
    m.shutdown()


def test_same_key_while_active_is_the_same_job_and_old_jobs_are_trimmed() -> None:
    m = JobManager(keep=3)
    gate = threading.Event()
    a = m.submit("reindex", {}, lambda p: gate.wait(5) and {}, key="reindex:kb:x")
    b = m.submit("reindex", {}, lambda p: {}, key="reindex:kb:x")
    assert a.id == b.id
    gate.set()
    wait_done(m, a.id)
    c = m.submit("reindex", {}, lambda p: {}, key="reindex:kb:x")
    assert c.id != a.id  # finished jobs do not block a new one
    ids = [m.submit("eval", {}, lambda p: {}).id for _ in range(6)]
    wait_done(m, ids[-1])
    m.submit("eval", {}, lambda p: {})
    assert len(m.list()) <= 4
    m.shutdown()


def make_entry(tmp_path: Path, **fields: Any) -> tuple[Path, LlmRecord]:
    d = tmp_path / "models" / "llm" / "run"
    d.mkdir(parents=True)
    return d, LlmRecord(name="run", model_path=str(d / "adapter"), **fields)


def test_artifacts_are_plain_known_names_inside_the_roots(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    entry_dir, record = make_entry(tmp_path, output_dir=str(out))
    (out / "training_loss.png").write_bytes(b"png")
    (out / "all_results.json").write_text("{}")
    (out / "adapter_model.safetensors").write_bytes(b"w")
    (entry_dir / "meta.json").write_text("{}")
    (entry_dir / "Modelfile").write_text("FROM x")
    secret = tmp_path / "secret_results.json"
    secret.write_text('{"key": 1}')
    os.symlink(secret, out / "leak_results.json")
    roots = artifacts.entry_roots(entry_dir, record)
    assert roots == [entry_dir, out]
    names = dict(artifacts.list_artifacts(roots))
    assert set(names) == {"training_loss.png", "all_results.json", "Modelfile"}
    assert artifacts.find_artifact(roots, "training_loss.png") == out / "training_loss.png"
    for bad in (
        "leak_results.json",
        "meta.json",
        "adapter_model.safetensors",
        "../secret_results.json",
        "..",
        "/etc/passwd",
        "",
    ):
        with pytest.raises(NotFound):
            artifacts.find_artifact(roots, bad)
    assert artifacts.media_type(out / "training_loss.png") == "image/png"
    assert artifacts.media_type(entry_dir / "Modelfile").startswith("text/plain")


def test_export_and_parity_rows_come_from_the_one_export_record(tmp_path: Path) -> None:
    q8 = tmp_path / "m.q8_0.gguf"
    q8.write_bytes(b"x" * 50)
    gate = {"top1_agreement": 0.93, "threshold": 0.9, "ok": True}
    stops = {"stopped": 5, "prompts": 6, "rate": 0.83, "ok": False}
    f = {"quant": "q8_0", "path": str(q8), "size": 50, "parity": gate, "stop_check": stops}
    _, rec = make_entry(tmp_path, base_model="b", export={"files": {"q8_0": {**f, "ok": False}}})
    rows = registry_views.export_rows(rec)
    assert [(r["name"], r["size"], r["parity"], r["stopped"], r["ok"]) for r in rows] == [
        ("q8_0", 50, 0.93, "5/6", False)
    ]
    (par,) = registry_views.parity_rows(rec)
    assert par["name"] == "q8_0" and par["top1_agreement"] == 0.93 and par["stop_rate"] == 0.83
    # a base model: its own GGUF and the F16 copy it is served from
    f16 = tmp_path / "m.f16.gguf"
    f16.write_bytes(b"x" * 100)
    base = LlmRecord(name="b", model_path=str(q8), quant="q4_1", serve_path=str(f16))
    assert [(r["name"], r["size"]) for r in registry_views.export_rows(base)] == [
        ("q4_1", 50),
        ("f16", 100),
    ]
    assert registry_views.parity_rows(base) == []
