"""Faults on the real local stack: a peer killed mid-request, the API killed mid-job, the
disk full mid-upload, and (CLI only, no stack needed) mid `embed tune` and `llm export`.
Each test restores what it broke (a killed Chroma or LLM server is started again from the
stack's own spec, a tmpfs is unmounted) and records its timings in
test-artifacts/reliability/faults-*.json."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from platform_cli.stack import UpOptions
from services.common.registry import Registry
from services.rag_api.store_chroma import ChromaStore
from tests.conftest import SAMPLES, unavailable
from tests.integration.conftest import Stack, register_embedder_copy
from tests.integration.converter_fixtures import make_lora_run
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
    store = ChromaStore(stack.settings.chroma_url)
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
    store = ChromaStore(stack.settings.chroma_url)
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
    if model.startswith("rag/") and not ChromaStore(stack.settings.chroma_url).builds(BULK):
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


def test_api_killed_mid_reindex_job_is_interrupted_and_resumable(
    stack: Stack, figures: Figures
) -> None:
    r = httpx.post(
        f"{stack.api}/v1/ingest", data={"collection": JOBS}, files=bulk_files(300), timeout=600
    )
    assert r.status_code == 200, r.text
    register_embedder_copy(stack, COPY_EMBEDDER)
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


# ---- (e) a full disk during `embed tune` and `llm export` -----------------------------------

MiB = 2**20
TUNED = "rel-disk-tuned"
LORA_RUN = "rel-disk-lora"
TUNE_TMPFS_MB = 600  # one checkpoint (weights + AdamW state, ~270 MB) and the result
EXPORT_TMPFS_MB = 1100  # merged/ (~515 MB f32), the f16 GGUF (~260 MB), q8_0 (~140 MB)


def tunestack(home: Path, *args: str, timeout: float = 600, **env: str) -> Any:
    """`tunestack ARGS` in a subprocess on its own TUNESTACK_HOME (no stack needed); wide
    output, so a message is one line."""
    full = {**os.environ, "TUNESTACK_HOME": str(home), "TUNESTACK_MODE": "local"}
    return subprocess.run(
        [sys.executable, "-m", "platform_cli.main", *args],
        env={**full, "COLUMNS": "400", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ballast(folder: Path, leave: int) -> Path:
    """A file on `folder`'s disk that leaves `leave` bytes free (allocated, not written)."""
    path = folder / "ballast.bin"
    size = shutil.disk_usage(folder).free - leave
    assert size > 0, f"{folder} has less than {leave} bytes free already"
    with path.open("wb") as f:
        os.posix_fallocate(f.fileno(), 0, size)
    return path


def assert_clear_disk_full(r: Any, folder: str) -> str:
    """Exit 1, the one-line disk-full error naming `folder` (relative to TUNESTACK_HOME)
    with its hint, and no traceback; returns the error line."""
    assert r.returncode == 1, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr[-3000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert errors and f"the folder {folder};" in errors[-1], r.stderr[-3000:]
    assert "The disk is full" in errors[-1]
    assert "df -h" in r.stderr and "rerun the same command" in r.stderr, r.stderr[-3000:]
    return errors[-1]


def faq_pairs(path: Path) -> Path:
    """The sample FAQ's 15 (question, answer) pairs as uniem records: one batch."""
    text = (SAMPLES / "corpus" / "product_faq.md").read_text(encoding="utf-8")
    pairs = re.findall(r"^\*\*(.+\?)\*\*\n(.+)$", text, flags=re.MULTILINE)
    path.write_text("".join(json.dumps({"text": q, "text_pos": a}) + "\n" for q, a in pairs))
    return path


def test_disk_full_during_embed_tune(tmp_path: Path, figures: Figures) -> None:
    """`embed tune` with the registry's models/ on a tmpfs that fills up while the trainer
    writes its first checkpoint (the weights fit, the optimizer state does not: torch.save
    fails with a bare RuntimeError): the disk-full error naming the checkpoint folder, exit
    1, no traceback, nothing registered, the cut-short checkpoint removed; after freeing
    space the same command registers the embedder."""
    home = tmp_path / "home"
    args = ["embed", "tune", "--pairs", str(faq_pairs(tmp_path / "pairs.jsonl"))]
    args += ["--name", TUNED, "--epochs", "1", "--batch-size", "15", "--max-seq-length", "32"]
    with tmpfs(home / "models", TUNE_TMPFS_MB) as models:
        registry = Registry(home)
        base = registry.ensure("embedder", "all-minilm-l6-v2")
        weights = (base.model_path / "model.safetensors").stat().st_size
        before = tree(models)
        ball = ballast(models, weights + 24 * MiB)
        t0 = time.monotonic()
        r = tunestack(home, *args)
        failed_s = time.monotonic() - t0
        error = assert_clear_disk_full(r, f"models/embedders/.work-{TUNED}")
        assert str(home) not in error
        assert not (registry.kind_dir("embedder") / TUNED).exists()
        assert TUNED not in registry.names("embedder")
        left = {k: v for k, v in tree(models).items() if k != "ballast.bin"}
        assert left == before, sorted(set(left) - set(before))  # no checkpoint, no temp dir
        assert not [p for p in models.rglob(".tmp-*")]
        ball.unlink()
        t1 = time.monotonic()
        r = tunestack(home, *args)
        rerun_s = time.monotonic() - t1
        assert r.returncode == 0, r.stderr[-3000:]
        entry = Registry(home).embedder(TUNED)
        assert entry.fingerprint != base.fingerprint and (entry.dir / "model").is_dir()
        assert not (registry.kind_dir("embedder") / f".work-{TUNED}").exists()
    figures(
        "faults-disk-embed-tune",
        {
            "tmpfs_mb": TUNE_TMPFS_MB,
            "free_mb_at_start": round((weights + 24 * MiB) / MiB),
            "error": error.removeprefix("error: "),
            "failed_after_s": round(failed_s, 1),
            "rerun_s": round(rerun_s, 1),
        },
    )


def lora_run_on_tmpfs(home: Path, size_mb: int) -> contextlib.AbstractContextManager[Path]:
    """A small LoRA run of the bundled SmolLM2-135M (tests/integration/test_converter.py's),
    its run folder moved onto a tmpfs of its own: the export stages and commits in it."""
    registry = Registry(home)
    make_lora_run(registry, LORA_RUN)
    run_dir = registry.entry_dir("llm", LORA_RUN)
    aside = run_dir.with_name(f"{LORA_RUN}.aside")
    run_dir.rename(aside)

    @contextlib.contextmanager
    def mounted() -> Iterator[Path]:
        with tmpfs(run_dir, size_mb) as mnt:
            shutil.copytree(aside, mnt, dirs_exist_ok=True)
            shutil.rmtree(aside)
            yield mnt

    return mounted()


def test_disk_full_during_llm_export(tmp_path: Path, figures: Figures) -> None:
    """`llm export` of a LoRA run whose folder is on a tmpfs with room for merged/ but not
    for the f16 GGUF (llama.cpp's converter, a child process, fails mid-write), then with
    less room than merged/ (safetensors fails in this process): each time the disk-full
    error naming the run's folder, exit 1, no traceback, meta.json unchanged, no GGUF,
    merged/ or staging folder left. After freeing space the same command exports (one
    type, q8_0, and the gates cut to one prompt, to keep the rerun short)."""
    home = tmp_path / "home"
    args = ["llm", "export", LORA_RUN, "--quant", "q8_0"]
    gates = {  # the gates cut to one short prompt each: this test is about the disk
        "TUNESTACK_CONVERT_PARITY_PROMPTS": "1",
        "TUNESTACK_CONVERT_PARITY_TOKENS": "8",
        "TUNESTACK_CONVERT_STOP_PROMPTS": "1",
        "TUNESTACK_CONVERT_STOP_MAX_TOKENS": "48",
        "TUNESTACK_CONVERT_THREADS": "2",
    }
    with lora_run_on_tmpfs(home, EXPORT_TMPFS_MB) as run_dir:
        base_hf = Path(str(Registry(home).llm(LORA_RUN).record.base_model_path))
        merged_size = sum(p.stat().st_size for p in base_hf.iterdir() if p.is_file())
        meta = (run_dir / "meta.json").read_bytes()
        before = tree(run_dir)
        attempts = {}
        for step, leave in (("convert", merged_size + 64 * MiB), ("merge", 64 * MiB)):
            ball = ballast(run_dir, leave)
            t0 = time.monotonic()
            r = tunestack(home, *args, **gates)
            took = time.monotonic() - t0
            error = assert_clear_disk_full(r, f"models/llm/{LORA_RUN}")
            assert str(home) not in error
            ball.unlink()
            assert (run_dir / "meta.json").read_bytes() == meta
            assert tree(run_dir) == before, sorted(set(tree(run_dir)) ^ set(before))
            assert not list(run_dir.glob(".tmp-*")) and not (run_dir / "gguf").exists()
            attempts[step] = {"free_mb": round(leave / MiB), "failed_after_s": round(took, 1)}
        t1 = time.monotonic()
        r = tunestack(home, *args, **gates)
        rerun_s = time.monotonic() - t1
        assert r.returncode in (0, 1), r.stderr[-3000:]
        assert "Traceback" not in r.stderr and "disk is full" not in r.stderr
        record = Registry(home).llm(LORA_RUN).record
        assert record.export is not None and set(record.export.files) == {"q8_0"}
        q8 = record.export.files["q8_0"]
        assert (run_dir / "gguf" / q8.file).stat().st_size == q8.size
        assert r.returncode == 0 or "failed their checks" in r.stderr, r.stderr[-3000:]
    figures(
        "faults-disk-llm-export",
        {
            "tmpfs_mb": EXPORT_TMPFS_MB,
            "merged_mb": round(merged_size / MiB),
            "error": error.removeprefix("error: "),
            "attempts": attempts,
            "rerun": "--quant q8_0; gates: 1 parity prompt x 8 tokens, 1 stop prompt",
            "rerun_s": round(rerun_s, 1),
            "rerun_steps_s": record.export.timings_s,
            "rerun_ok": q8.ok,
            "q8_0_mb": round(q8.size / MiB),
        },
    )
