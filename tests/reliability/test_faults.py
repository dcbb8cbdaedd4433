"""Faults on the real local stack: a peer killed mid-request, the API killed mid-job, the
disk full mid-upload. Each test restores what it broke (a killed Chroma or LLM server is
started again from the stack's own spec) and records its timings in
test-artifacts/reliability/faults-*.json."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from platform_cli.stack import UpOptions
from services.common.hashing import dir_fingerprint
from services.common.registry import Registry
from services.rag_api.store import VectorStore
from tests.conftest import unavailable
from tests.integration.conftest import Stack
from tests.reliability.conftest import HIGH_LIMITS, api_process

BULK = "rel-faults"
JOBS = "rel-jobs"
COPY_EMBEDDER = "rel-minilm-copy"
Figures = Callable[[str, Any], None]
WORDS = (  # noqa: SIM905 (one line of words reads better than a 45-line list)
    "warranty battery shipping refund invoice policy device firmware update server backup "
    "employee manager holiday travel expense receipt approval ticket support customer order "
    "delivery return window screen charger cable adapter network password account login "
    "report quarter budget review release version install guide step reset button light"
).split()


def bulk_files(n: int = 900, words: int = 24) -> list[tuple[str, tuple[str, bytes]]]:
    """n distinct short documents of one chunk each: cheap to embed, and more than the
    512 chunks the ingest embeds before its first write to Chroma."""
    out = []
    for i in range(n):
        text = f"Note {i}: " + " ".join(random.Random(i).choices(WORDS, k=words)) + "."
        out.append(("files", (f"note-{i:04d}.md", text.encode())))
    return out


def kill_group(pid: int) -> None:
    """kill -9 a stack service (its own process group, as LocalStack starts it)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)


def restart_services(stack: Stack) -> float:
    """Start what is down again (LocalStack.up leaves healthy services alone); seconds."""
    t0 = time.monotonic()
    stack.local.up(UpOptions(ui=False), lambda m: None)
    return time.monotonic() - t0


def chunk_census(stack: Stack, collection: str) -> tuple[int, dict[str, Counter[int]], set[str]]:
    """(chunks, source -> chunk_index counts, sources with a missing or extra chunk) of the
    collection's default-embedder build, read from Chroma itself."""
    store = VectorStore(stack.settings.chroma_url)
    (build,) = [b for b in store.builds(collection) if b.embedder == "all-minilm-l6-v2"]
    per: dict[str, Counter[int]] = {}
    expected: dict[str, int] = {}
    for rec in store.iter_records(build, include=["metadatas"]):
        md = rec["metadatas"]
        per.setdefault(md["source"], Counter())[int(md["chunk_index"])] += 1
        expected[md["source"]] = int(md["n_chunks"])
    bad = {
        s for s, c in per.items() if sorted(c) != list(range(expected[s])) or max(c.values()) > 1
    }
    return store.count(build), per, bad


# ---- (a) Chroma killed mid-ingest ---------------------------------------------------------


def test_chroma_killed_mid_ingest_then_rerun_completes(stack: Stack, figures: Figures) -> None:
    files = bulk_files()
    store = VectorStore(stack.settings.chroma_url)
    url = f"{stack.api}/v1/ingest"

    def ingest() -> httpx.Response:
        return httpx.post(url, data={"collection": BULK}, files=files, timeout=300)

    with ThreadPoolExecutor(1) as pool:
        t0 = time.monotonic()
        running = pool.submit(ingest)
        written = 0
        while written == 0 and not running.done() and time.monotonic() - t0 < 240:
            time.sleep(0.1)
            with contextlib.suppress(Exception):
                written = sum(store.count(b) for b in store.builds(BULK))
        assert not running.done(), (
            f"the ingest ended before Chroma was killed: {running.result().text}"
        )
        pid = stack.local.pid("chroma")
        assert pid is not None
        kill_group(pid)
        killed_at = time.monotonic()
        r = running.result()
        answered = time.monotonic() - killed_at
    try:
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["service"] == "chroma" and "tunestack up" in body["hint"], body
        assert {"error", "message", "hint"} <= set(body) and "Traceback" not in r.text
    finally:
        restart = restart_services(stack)
    t1 = time.monotonic()
    r = ingest()
    rerun = time.monotonic() - t1
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["counts"].get("failed", 0) == 0, report["counts"]
    assert report["counts"].get("unchanged", 0) > 0, "nothing of the first run was kept"
    total, per, bad = chunk_census(stack, BULK)
    assert len(per) == len(files) and not bad, f"incomplete or duplicated: {sorted(bad)[:5]}"
    assert total == sum(f["chunks"] for f in report["files"]), (total, report["counts"])
    figures(
        "faults-chroma",
        {
            "files": len(files),
            "chunks": total,
            "chunks_before_kill": written,
            "killed_after_s": round(killed_at - t0, 1),
            "503_after_kill_s": round(answered, 2),
            "chroma_restart_s": round(restart, 1),
            "rerun_s": round(rerun, 1),
            "rerun_counts": report["counts"],
        },
    )


# ---- (b) LLM server killed mid-stream -------------------------------------------------------


def stream_until_killed(stack: Stack, body: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    """Stream a chat, kill -9 the LLM server at the first content token, read to the end."""
    events: list[Any] = []
    pid = stack.local.pid("llm")
    assert pid is not None
    killed_at = None
    t0 = time.monotonic()
    with httpx.stream(
        "POST", f"{stack.api}/v1/chat/completions", json={**body, "stream": True}, timeout=timeout
    ) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
            delta = (
                (events[-1].get("choices") or [{}])[0].get("delta", {}) if data != "[DONE]" else {}
            )
            if killed_at is None and delta.get("content"):
                kill_group(pid)
                killed_at = time.monotonic()
    ended = time.monotonic()
    assert killed_at is not None, f"no content before the stream ended: {events}"
    return {"events": events, "end_after_kill_s": ended - killed_at, "total_s": ended - t0}


@pytest.mark.parametrize(
    "model",
    [f"rag/{BULK}", "smollm2-135m-instruct"],
    ids=["rag", "passthrough"],
)
def test_llm_killed_mid_stream_ends_with_error_event(
    stack: Stack, model: str, figures: Figures
) -> None:
    if model.startswith("rag/") and not VectorStore(stack.settings.chroma_url).builds(BULK):
        httpx.post(
            f"{stack.api}/v1/ingest", data={"collection": BULK}, files=bulk_files(8), timeout=300
        )
    body = {
        "model": model,
        "max_tokens": 400,
        "temperature": 0,
        "messages": [
            {
                "role": "user",
                "content": "Describe the warranty, shipping and refund rules in detail.",
            }
        ],
    }
    try:
        out = stream_until_killed(stack, body)
    finally:
        restart = restart_services(stack)
    events = out["events"]
    errors = [e for e in events if isinstance(e, dict) and "error" in e]
    assert errors, f"the stream ended without an error event: {events[-3:]}"
    err = errors[-1]["error"]
    assert err["service"] == "llm" and err["code"] in (502, 503, 504), err
    assert {"error", "message", "hint"} <= set(err)
    assert events[-1] == "[DONE]" and events.index(errors[-1]) == len(events) - 2
    assert out["end_after_kill_s"] < 30
    name = "rag" if model.startswith("rag/") else "passthrough"
    figures(
        f"faults-llm-{name}",
        {
            "events_before_error": len(events) - 2,
            "error": err["error"],
            "code": err["code"],
            "stream_end_after_kill_s": round(out["end_after_kill_s"], 2),
            "llm_restart_s": round(restart, 1),
        },
    )


# ---- (c) API killed mid-job -------------------------------------------------------------------


def register_copy_embedder(stack: Stack) -> None:
    """Another embedder (the base one's files, another fingerprint): reindex target."""
    reg = Registry(stack.home)
    with contextlib.suppress(Exception):
        reg.get("embedder", COPY_EMBEDDER)
        return
    base = reg.ensure("embedder", "all-minilm-l6-v2")
    copy = stack.home / COPY_EMBEDDER
    shutil.copytree(base.model_path, copy, dirs_exist_ok=True)
    cfg = copy / "config_sentence_transformers.json"
    cfg.write_text(cfg.read_text() + "\n")
    reg.write(
        base.record.model_copy(
            update={
                "name": COPY_EMBEDDER,
                "model_path": str(copy),
                "base_model": "all-minilm-l6-v2",
                "fingerprint": dir_fingerprint(copy)[:16],
            }
        ),
        replace=True,
    )


def test_api_killed_mid_reindex_job_is_interrupted_and_resumable(
    stack: Stack, figures: Figures
) -> None:
    r = httpx.post(
        f"{stack.api}/v1/ingest", data={"collection": JOBS}, files=bulk_files(300), timeout=600
    )
    assert r.status_code == 200, r.text
    register_copy_embedder(stack)
    with api_process(stack, **HIGH_LIMITS) as api, api.client() as c:
        r = c.post("/v1/jobs/reindex", json={"collection": JOBS, "embedder": COPY_EMBEDDER})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        t0 = time.monotonic()
        job: dict[str, Any] = {}
        while time.monotonic() - t0 < 120:
            job = c.get(f"/v1/jobs/{job_id}").json()
            if job["status"] != "queued":
                break
            time.sleep(0.1)
        assert job["status"] == "running", job
        api.proc.kill()  # kill -9 mid-job
        api.proc.wait(10)
        progress_at_kill = f"{job['done']}/{job['total']}"
    t1 = time.monotonic()
    with api_process(stack, **HIGH_LIMITS) as again, again.client() as c:
        restart = time.monotonic() - t1
        job = c.get(f"/v1/jobs/{job_id}").json()
        listed = [j for j in c.get("/v1/jobs").json()["jobs"] if j["id"] == job_id]
    command = f"tunestack reindex {JOBS} --embedder {COPY_EMBEDDER}"
    assert job["status"] == "interrupted" and listed and listed[0]["status"] == "interrupted"
    assert job["resume"] == command and command in job["error"]["hint"], job
    t2 = time.monotonic()
    done = stack.cli(*shlex.split(command)[1:])
    resumed = time.monotonic() - t2
    assert done.returncode == 0, done.stdout + done.stderr
    with httpx.Client(base_url=stack.api, timeout=60) as c:
        cols = c.get("/v1/collections").json()["collections"]
    builds = {
        b["embedder"]: b["chunks"] for col in cols if col["name"] == JOBS for b in col["builds"]
    }
    assert builds[COPY_EMBEDDER] == builds["all-minilm-l6-v2"] > 0, builds
    figures(
        "faults-api-job",
        {
            "chunks": builds[COPY_EMBEDDER],
            "progress_at_kill": progress_at_kill,
            "api_restart_s": round(restart, 1),
            "resume_command": command,
            "resume_s": round(resumed, 1),
        },
    )


# ---- (d) TUNESTACK_HOME on a full disk ------------------------------------------------------

TMPFS_MB = 100


@contextlib.contextmanager
def tmpfs(path: Path, size_mb: int) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    try:
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        unavailable(f"cannot mount a tmpfs for the disk-full test ({e}); it needs root")
    if r.returncode != 0:
        unavailable(f"cannot mount a tmpfs for the disk-full test (needs root): {r.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def tree(root: Path) -> dict[str, int]:
    return {
        p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*") if p.is_file()
    }


def test_disk_full_mid_upload(stack: Stack, tmp_path: Path, figures: Figures) -> None:
    """TUNESTACK_HOME on a tmpfs that fills up while an upload is written: a 507 naming
    the folder, nothing registered, no temp file left; after space is freed the same
    upload goes through. (Larger files than TUNESTACK_RAG_MAX_FILE_MB are stored but not
    read, so the rerun does not spend a minute embedding megabytes of filler.)"""
    big = ("files", ("big.txt", b"filler line\n" * (6 * 2**20 // 12)))  # 6 MB
    note = ("files", ("note.md", b"# Disk test\n\nThe disk-full rerun stored this note.\n"))
    with (
        tmpfs(tmp_path / "home", TMPFS_MB) as home,
        api_process(stack, home, TUNESTACK_RAG_MAX_FILE_MB="1", **HIGH_LIMITS) as api,
        api.client() as c,
    ):
        ballast = home / "ballast.bin"
        free = shutil.disk_usage(home).free
        ballast.write_bytes(b"\0" * (free - 3 * 2**20))  # leave 3 MB
        before = tree(home / "models") if (home / "models").exists() else {}
        t0 = time.monotonic()
        r = c.post("/v1/ingest", data={"collection": "rel-disk"}, files=[big, note])
        answered = time.monotonic() - t0
        assert r.status_code == 507, r.text
        body = r.json()
        assert body["error"] == "DiskFull" and "uploads/rel-disk" in body["message"], body
        assert str(home) not in r.text and "Traceback" not in r.text
        assert not list((home / "uploads").rglob(".upload-*")), "a temp file was left"
        assert (tree(home / "models") if (home / "models").exists() else {}) == before
        names = [col["name"] for col in c.get("/v1/collections").json()["collections"]]
        assert "rel-disk" not in names
        # a small upload on the nearly full disk: refused up front, nothing ingested
        r = c.post("/v1/ingest", data={"collection": "rel-disk"}, files=[note])
        assert r.status_code in (400, 507) and "disk" in r.json()["message"].lower(), r.text
        ballast.unlink()
        t1 = time.monotonic()
        r = c.post("/v1/ingest", data={"collection": "rel-disk"}, files=[big, note])
        rerun = time.monotonic() - t1
        assert r.status_code == 200, r.text
        status = {f["path"]: f["status"] for f in r.json()["files"]}
        assert status["note.md"] == "ok", status
        log = api.log_text()
    assert "unhandled error" not in log
    figures(
        "faults-disk",
        {
            "tmpfs_mb": TMPFS_MB,
            "507_after_s": round(answered, 2),
            "rerun_s": round(rerun, 2),
            "rerun_files": status,
        },
    )
