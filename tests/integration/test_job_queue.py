"""Jobs on a real Redis with real RQ workers: two API processes (replicas) share one
queue, a `tunestack worker` process runs the jobs, and a worker killed mid-job loses
nothing (its job runs again and finishes).

Redis is Debian's redis-server, started on a free port; under CI=1 a missing one fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import SAMPLES, free_port, unavailable
from tests.integration.conftest import Stack, register_embedder_copy, start_api

COLLECTION = "queued"
TUNE_DOCS = ("product_faq.md", "expense_policy.md")


@dataclass
class Queue:
    url: str
    apis: list[str]  # two replicas
    env: dict[str, str]  # a worker's environment
    home: Path


def start_redis(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        cwd=home,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        ping = subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True)
        if ping.returncode == 0:
            return proc, f"redis://127.0.0.1:{port}/0"
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("redis-server did not start")


@pytest.fixture(scope="module")
def queue(stack: Stack) -> Iterator[Queue]:
    redis, url = start_redis(stack.home)
    env = {"TUNESTACK_QUEUE_URL": url}
    ports = [free_port(), free_port()]
    apis = [start_api(stack, p, **env) for p in ports]
    worker_env = {
        **stack.local.child_env(),
        **env,
        "TUNESTACK_RAG_WORKER_HEARTBEAT_S": "1",
        "TUNESTACK_RAG_WORKER_MAINTENANCE_S": "2",
        "TUNESTACK_RAG_WORKER_GRACE_S": "10",
    }
    try:
        yield Queue(url, [f"http://127.0.0.1:{p}" for p in ports], worker_env, stack.home)
    finally:
        for p in apis:
            p.terminate()
            p.wait(10)
        redis.terminate()
        redis.wait(10)


@pytest.fixture(scope="module")
def collection(stack: Stack) -> str:
    corpus = sorted((SAMPLES / "corpus").rglob("*.md"))
    files = [("files", (p.name, p.read_bytes())) for p in corpus]
    r = httpx.post(
        f"{stack.api}/v1/ingest", data={"collection": COLLECTION}, files=files, timeout=600
    )
    assert r.status_code == 200, r.text
    return COLLECTION


def start_worker(q: Queue, name: str, *queues: str) -> subprocess.Popen[bytes]:
    log = (q.home / f"worker-{name}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "platform_cli.main", "worker", *(f"--queues={n}" for n in queues)],
        env=q.env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a warm shutdown); rarely RQ's idle worker hangs joining its pubsub thread
    after it, so a worker still there after 30 s is killed (it holds no job then)."""
    worker.terminate()
    try:
        worker.wait(30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait(10)


def job(api: str, job_id: str) -> dict[str, Any]:
    r = httpx.get(f"{api}/v1/jobs/{job_id}", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def wait_for(api: str, job_id: str, statuses: set[str], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (info := job(api, job_id))["status"] not in statuses:
        assert time.monotonic() < deadline, info
        time.sleep(0.1)
    return info


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_replicas_share_jobs_and_a_worker_runs_them(
    stack: Stack, queue: Queue, collection: str
) -> None:
    a, b = queue.apis
    register_embedder_copy(stack, "minilm-queued")
    body = {"collection": collection, "embedder": "minilm-queued"}
    first = httpx.post(f"{a}/v1/jobs/reindex", json=body, timeout=30)
    assert first.status_code == 202, first.text
    info = first.json()
    assert info["status"] == "queued" and info["message"] == "waiting for a worker"
    # the other replica sees it, and the same work asked there is the same job
    again = httpx.post(f"{b}/v1/jobs/reindex", json=body, timeout=30).json()
    assert again["id"] == info["id"]
    assert info["id"] in [j["id"] for j in httpx.get(f"{b}/v1/jobs", timeout=10).json()["jobs"]]
    ready = httpx.get(f"{b}/readyz", timeout=30).json()["checks"]["queue"]
    assert ready["ok"] and ready["workers"] == 0 and "@" not in ready["url"]

    worker = start_worker(queue, "one")
    try:
        done = wait_for(b, info["id"], {"done", "failed"}, timeout=300)
        assert done["status"] == "done", done
        assert done["result"]["embedder"] == "minilm-queued" and done["result"]["chunks"] > 0
        assert done["attempts"] == 1 and "args" not in done
        r = httpx.post(
            f"{a}/v1/retrieve", json={**body, "query": "warranty"}, timeout=60
        )  # built by the worker, served by the replica
        assert r.status_code == 200 and r.json()["embedder"] == "minilm-queued"
        assert httpx.get(f"{a}/readyz", timeout=30).json()["checks"]["queue"]["workers"] == 1
        env = {"TUNESTACK_QUEUE_URL": queue.url, "COLUMNS": "200"}
        doctor = stack.cli("doctor", env=env, timeout=120)
        assert "job queue" in doctor.stdout and "1 worker(s)" in doctor.stdout, doctor.stdout
        # an upload queued on one replica is ingested by the worker
        doc = ("files", ("queued.md", b"# Queued\n\nThe Lumen Q1 ships in a blue box.\n"))
        r = httpx.post(
            f"{b}/v1/jobs/ingest", data={"collection": collection}, files=[doc], timeout=60
        )
        assert r.status_code == 202, r.text
        ingested = wait_for(a, r.json()["id"], {"done", "failed"}, timeout=300)
        assert ingested["status"] == "done" and ingested["result"]["counts"]["ok"] == 1, ingested
    finally:
        stop_worker(worker)


def test_a_killed_worker_loses_no_job(stack: Stack, queue: Queue, collection: str) -> None:
    """The job's process is killed mid-run (as the kernel's OOM killer would): the worker
    runs it again at once. Then the whole worker is killed: the job waits, and a new
    worker picks it up once the dead one's heartbeat has expired (1 s + 10 s of grace)."""
    a, b = queue.apis
    register_embedder_copy(stack, "minilm-killed")
    body = {"collection": collection, "embedder": "minilm-killed"}
    worker = start_worker(queue, "killed")
    try:
        info = httpx.post(f"{a}/v1/jobs/reindex", json=body, timeout=30).json()
        wait_for(b, info["id"], {"running"}, timeout=120)
        (horse,) = children(worker.pid)
        os.kill(horse, signal.SIGKILL)
        done = wait_for(a, info["id"], {"done", "failed", "interrupted"}, timeout=300)
        assert done["status"] == "done" and done["attempts"] == 2, done

        # the whole worker dies mid-job: another worker finishes it
        register_embedder_copy(stack, "minilm-orphan")
        body = {"collection": collection, "embedder": "minilm-orphan"}
        info = httpx.post(f"{a}/v1/jobs/reindex", json=body, timeout=30).json()
        wait_for(b, info["id"], {"running"}, timeout=120)
        horses = children(worker.pid)  # in their own sessions: the parent first, then them
        worker.kill()
        worker.wait(10)
        for pid in horses:
            os.kill(pid, signal.SIGKILL)
        time.sleep(1)
        assert job(a, info["id"])["status"] == "running"  # not lost, not yet re-run
        worker = start_worker(queue, "second")
        done = wait_for(b, info["id"], {"done", "failed", "interrupted"}, timeout=240)
        assert done["status"] == "done" and done["attempts"] == 2, done
    finally:
        stop_worker(worker)


def test_tune_and_train_jobs_wait_for_a_worker_that_can_train(stack: Stack, queue: Queue) -> None:
    """POST /v1/jobs/tune and /v1/jobs/train go to the train queue: a worker of the other
    queue leaves them alone, a worker that can train runs them as `embed tune` and
    `llm train` would (a registered embedder with the collection built for it; a
    registered LoRA run and the config it trained). Unsafe or wrong configs are refused
    before anything is queued."""
    a, b = queue.apis
    llm_data = queue.home / "llm-data"
    shutil.copytree(SAMPLES / "llm_sft", llm_data, dirs_exist_ok=True)
    config = {
        "model_name_or_path": "smollm2-135m-instruct",
        "dataset": "lumen_identity",
        "max_steps": 2,
        "per_device_train_batch_size": 2,
        "cutoff_len": 96,
        "lora_rank": 4,
        "save_steps": 1,
        "logging_steps": 1,
    }
    refusals = [
        ({"output_dir": "/tmp/x"}, 422, "'output_dir'"),
        ({"deepspeed": "/etc/passwd"}, 422, "'deepspeed'"),
        ({"trust_remote_code": True}, 422, "'trust_remote_code'"),
        ({"resume_from_checkpoint": "/tmp/ckpt"}, 422, "'resume_from_checkpoint'"),
        ({"model_name_or_path": "/etc"}, 422, "no paths"),
        ({"model_name_or_path": "../models/llm/x"}, 422, "no paths"),
        ({"model_name_or_path": "org/not-pulled"}, 404, "No base LLM named"),
        ({"dataset": "nope"}, 422, "Defined: lumen_chat"),
        ({"learning_rat": 1e-4}, 422, "did you mean 'learning_rate'"),
    ]
    for change, status, words in refusals:
        r = httpx.post(
            f"{a}/v1/jobs/train",
            json={"run_name": "refused", "config": {**config, **change}},
            timeout=30,
        )
        assert r.status_code == status and words in r.text, (change, r.text)
        assert "/tmp/pytest" not in r.text and str(queue.home) not in r.text

    only_jobs = start_worker(queue, "jobs-only", "jobs")
    trainer = None
    try:
        # a small collection of its own: two documents, so tuning takes seconds
        small = [("files", (n, (SAMPLES / "corpus" / n).read_bytes())) for n in TUNE_DOCS]
        r = httpx.post(f"{a}/v1/ingest", data={"collection": "tune-kb"}, files=small, timeout=300)
        assert r.status_code == 200, r.text
        for wrong in ({"collection": ""}, {"collection": "tune-kb", "dataset": ""}):
            r = httpx.post(f"{a}/v1/jobs/tune", json={"name": "x", **wrong}, timeout=30)
            assert r.status_code == 422 and r.json()["hint"], (wrong, r.text)
        body = {"name": "minilm-kb-tuned", "collection": "tune-kb", "epochs": 1, "batch_size": 16}
        r = httpx.post(f"{a}/v1/jobs/tune", json=body, timeout=30)
        assert r.status_code == 202, r.text
        tune = r.json()
        assert "waiting for a worker that can train" in tune["message"], tune
        r = httpx.post(f"{b}/v1/jobs/train", json={"run_name": "queued-lora", "config": config})
        assert r.status_code == 202, r.text
        train = r.json()
        deadline = time.monotonic() + 120
        while (ready := httpx.get(f"{b}/readyz", timeout=30).json()["checks"]["queue"])[
            "workers"
        ] < 1:
            assert time.monotonic() < deadline, ready
            time.sleep(0.5)
        assert ready["train_workers"] == 0, ready
        time.sleep(3)  # the jobs-only worker is listening, and leaves both alone
        assert job(b, tune["id"])["status"] == "queued"
        assert job(a, train["id"])["status"] == "queued"

        trainer = start_worker(queue, "trainer")  # default queues: this install can train
        done = wait_for(a, tune["id"], {"done", "failed"}, timeout=600)
        assert done["status"] == "done", done
        result = done["result"]
        assert result["embedder"] == "minilm-kb-tuned" and result["metrics"], result
        assert result["collection"]["embedder"] == "minilm-kb-tuned"
        assert result["collection"]["chunks"] > 0
        r = httpx.post(
            f"{b}/v1/retrieve",
            json={"collection": "tune-kb", "embedder": "minilm-kb-tuned", "query": "refund"},
            timeout=60,
        )
        assert r.status_code == 200 and r.json()["hits"], r.text

        done = wait_for(b, train["id"], {"done", "failed"}, timeout=600)
        assert done["status"] == "done", done
        assert done["total"] == 2 and done["done"] == 2, done
        result = done["result"]
        assert result["run"] == "queued-lora" and result["metrics"]["train_loss"] > 0
        assert (queue.home / "jobs" / "train" / "queued-lora.yaml").is_file()
        rec = stack.registry.llm("queued-lora").record
        assert rec.base_model and rec.finetuning_type == "lora"
        again = httpx.post(f"{a}/v1/jobs/train", json={"run_name": "queued-lora", "config": config})
        assert again.status_code == 409 and "overwrite_output_dir" in again.text
    finally:
        for w in (only_jobs, trainer):
            if w is not None:
                stop_worker(w)


def test_collection_writers_on_two_machines_exclude_each_other(
    queue: Queue, tmp_path: Path
) -> None:
    """Two contexts with their own TUNESTACK_HOME (their flock files cannot meet, as on two
    nodes) and one Redis: the second writer of a collection waits for the first, and a
    deadline on a busy lock is a Conflict naming it."""
    from pydantic import SecretStr

    from services.common.errors import Conflict
    from services.rag_api.context import RagContext
    from services.rag_api.settings import RagSettings

    def context(home: str) -> RagContext:
        s = RagSettings(home=tmp_path / home, queue_url=SecretStr(queue.url), warm_embedder=False)
        return RagContext.from_settings(s)

    one, two = context("node-a"), context("node-b")
    events: list[str] = []
    waited = threading.Event()
    with one.collection_lock("kb"):

        def second() -> None:
            with two.collection_lock("kb", waiting=waited.set):
                events.append("two writes")

        t = threading.Thread(target=second)
        t.start()
        assert waited.wait(10)
        time.sleep(0.5)
        events.append("one done")
    t.join(10)
    assert events == ["one done", "two writes"]
    busy = two.shared_lock("collection-kb", contextlib.nullcontext(), timeout=0.5, what="KB")
    with one.collection_lock("kb"), pytest.raises(Conflict) as e, busy:
        pass
    assert "KB is busy" in e.value.message
