"""The `tunestack` CLI as a user runs it, against the running stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import SAMPLES
from tests.integration.conftest import Stack


def cli(stack: Stack, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return stack.cli(*args, timeout=timeout)


def test_ingest_then_ask_json(stack: Stack) -> None:
    r = cli(stack, "ingest", str(SAMPLES / "corpus"), "-c", "cli", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["counts"]["ok"] >= 13 and "failed" not in report["counts"]
    q = json.loads((SAMPLES / "questions.json").read_text())[2]
    r = cli(stack, "ask", q["question"], "-c", "cli", "--json")
    assert r.returncode == 0, r.stderr
    body = json.loads(r.stdout)
    assert body["sources"] and body["choices"][0]["message"]["content"]
    r = cli(stack, "ask", q["question"], "-c", "cli")
    assert "A:" in r.stdout and "[1]" in r.stdout


def test_status_and_models(stack: Stack) -> None:
    r = cli(stack, "status", "--json")
    states = {s["service"]: s["state"] for s in json.loads(r.stdout)}
    assert states["chroma"] == states["llm"] == states["rag-api"] == "healthy"
    r = cli(stack, "models", "list", "--json")
    names = {m["name"] for m in json.loads(r.stdout)}
    assert {"smollm2-135m-instruct", "all-minilm-l6-v2"} <= names


def test_failures_are_messages_not_tracebacks(stack: Stack, tmp_path: Path) -> None:
    r = cli(stack, "ask", "anything", "-c", "does-not-exist")
    assert r.returncode == 1 and "does not exist" in r.stderr and "hint" in r.stderr
    assert "Traceback" not in r.stderr
    r = cli(stack, "ingest", str(tmp_path), "-c", "x", "--embedder", "nope")
    assert r.returncode == 1 and "Registered: " in r.stderr and "Traceback" not in r.stderr
    r = cli(stack, "ingest", str(tmp_path / "missing.md"), "-c", "bad__name")
    assert r.returncode == 1 and "not a valid collection name" in r.stderr
    env = {**stack.env(), "TUNESTACK_CHROMA_PORT": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "platform_cli.main", "ingest", str(SAMPLES), "-c", "x"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1 and "Chroma" in r.stderr and "tunestack up" in r.stderr


def test_doctor_runs(stack: Stack) -> None:
    r = cli(stack, "doctor")
    assert "python" in r.stdout and "docker engine" in r.stdout and "llm engine" in r.stdout
    assert "Traceback" not in r.stderr


def test_cli_ingest_takes_the_collections_lock(stack: Stack, tmp_path: Path) -> None:
    """`tunestack ingest` and the API write a collection under one cross-process lock:
    while another writer holds it, the CLI waits (and says so), then completes."""
    import threading
    import time

    from services.common.locks import collection_lock

    doc = tmp_path / "locked.md"
    doc.write_text("The Lumen & Oak loyalty card gives 5% off every purchase.\n")
    err: list[str] = []
    with collection_lock(stack.home, "cli-locked"):
        proc = subprocess.Popen(
            [sys.executable, "-m", "platform_cli.main", "ingest", str(doc), "-c", "cli-locked"],
            env=stack.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None
        reader = threading.Thread(target=lambda: err.extend(proc.stderr or []), daemon=True)
        reader.start()
        deadline = time.monotonic() + 120
        while not any("Waiting for another write to cli-locked" in e for e in err):
            assert proc.poll() is None and time.monotonic() < deadline, err
            time.sleep(0.2)
        time.sleep(1)
        assert proc.poll() is None  # still waiting for the lock
    out = proc.stdout.read() if proc.stdout else ""
    assert proc.wait(timeout=300) == 0, err
    assert "1 ok" in out
