"""The job queue's parts that need no Redis: a switch recorded by another process is
followed, a job's arguments stay inside, a Redis URL's password never shows, and a queue
that is down is a clear 503 (the real queue: tests/integration/test_job_queue.py)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from services.common.errors import ServiceUnavailable
from services.rag_api.context import RagContext, deployment_path
from services.rag_api.job_queue import RedisJobs, where
from services.rag_api.jobs import JobManager, JobSpec
from services.rag_api.settings import RagSettings
from tests.conftest import free_port


def test_a_deploy_recorded_elsewhere_switches_this_api_within_a_second(tmp_path: Path) -> None:
    s = RagSettings(home=tmp_path, llm_base_url=f"http://127.0.0.1:{free_port()}/v1")
    ctx = RagContext.from_settings(s)
    assert ctx.llm.target.model == s.default_llm
    path = deployment_path(s.home_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    ollama = s.ollama_host.rstrip("/") + "/v1"
    record = {"base_url": ollama, "model": "kb-tuned", "configured": s.llm_base_url}
    path.write_text(json.dumps(record))  # what a worker's (or another replica's) deploy wrote
    deadline = time.monotonic() + 3
    while ctx.llm.target.model != "kb-tuned":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert ctx.llm.target.base_url == ollama
    assert ctx.llm.target.api_key == "sk-no-key-required"  # not the configured server's key
    # a record for a server this API was not configured with is not followed
    path.write_text(json.dumps({**record, "base_url": "http://10.9.9.9/v1", "model": "evil"}))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    time.sleep(1.1)
    assert ctx.llm.target.model == "kb-tuned"


def test_a_local_job_runs_its_arguments_and_shows_only_its_params() -> None:
    seen: list[Any] = []

    def runner(kind: str, args: dict[str, Any], progress: Any, loop: Any) -> dict[str, Any]:
        seen.append((kind, args, loop))
        progress(1, 1, "one")
        return {"ok": True}

    m = JobManager(runner=runner)
    info = m.enqueue(JobSpec("reindex", {"collection": "kb"}, {"path": "/srv/secret"}))
    deadline = time.monotonic() + 5
    while (info := m.get(info["id"]))["status"] != "done":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert seen == [("reindex", {"path": "/srv/secret"}, None)]  # no loop in a sync caller
    assert "/srv/secret" not in json.dumps(info) and info["attempts"] == 1
    m.shutdown()


def test_redis_url_password_is_never_shown() -> None:
    assert where("redis://:s3cret@queue.internal:6380/2") == "queue.internal:6380/2"
    assert where("redis://user:s3cret@10.0.0.7/0") == "10.0.0.7:6379/0"


def test_a_queue_that_is_down_is_a_clear_503() -> None:
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    jobs = RedisJobs(url)
    with pytest.raises(ServiceUnavailable) as e:
        jobs.enqueue(JobSpec("reindex", {}, {}))
    assert e.value.service == "queue" and "s3cret" not in e.value.message
    assert "TUNESTACK_QUEUE_URL" in (e.value.hint or "")
    with pytest.raises(ServiceUnavailable):
        jobs.list()
    ready = jobs.ready()
    assert ready["ok"] is False and "s3cret" not in json.dumps(ready)
