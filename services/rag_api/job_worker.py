"""`tunestack worker`: runs the jobs the API queued on TUNESTACK_QUEUE_URL (Redis).

Start as many as the machines allow (one per 2 cores is a fair start: evaluation and
reindex use every core they get); each takes one job at a time. RQ forks a work horse per
job, which builds a RagContext from the same settings as the API (the same registry
volume, Chroma and LLM server) and runs services.rag_api.job_bodies.run_job, writing
progress into the job record that every API replica reads.

A job that is run again after its worker died resumes where the work allows: a RAG
evaluation keeps the answers it already wrote, a reindex upserts the same chunk ids, an
embedding evaluation writes a new report, and a deploy re-checks its export and switches.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import sys
import time
from typing import Any

from redis.exceptions import ConnectionError as RedisDown
from redis.exceptions import TimeoutError as RedisTimeout
from rq import Queue, Worker, get_current_job

from services.common.errors import BadInput
from services.common.logs import quiet_libraries
from services.rag_api.context import RagContext
from services.rag_api.job_bodies import run_job
from services.rag_api.job_queue import (
    QUEUE,
    TRAIN_QUEUE,
    JobStore,
    StoreProgress,
    connect,
    unreachable,
    where,
)
from services.rag_api.jobs import Progress, finish, job_outcome
from services.rag_api.settings import RagSettings

log = logging.getLogger("tunestack.worker")


def execute(job_id: str) -> dict[str, Any]:
    """RQ's entry for one job, in the work horse: load the record, run, record the end."""
    current = get_current_job()
    assert current is not None, "execute runs inside an RQ worker"
    store = JobStore(current.connection)
    job = store.load(job_id)
    if job is None or not job.active:  # trimmed, or finished before a retry was queued
        return {"skipped": job_id}
    job.attempts += 1
    job.status, job.started = "running", time.time()
    job.message = (
        "starting"
        if job.attempts == 1
        else f"started again after its worker stopped (attempt {job.attempts})"
    )
    if job.kind == "rag-eval" and job.attempts > 1:
        job.args = {**job.args, "resume": True}  # keep the answers the dead worker wrote
    store.save(job)
    s = RagSettings()
    log.info("job %s (%s), attempt %d", job.id, job.kind, job.attempts)
    ctx = RagContext.from_settings(s, pool_capacity=2)

    def body(progress: Progress) -> dict[str, Any]:
        return run_job(ctx, job.kind, job.args, progress)

    result, error = job_outcome(job, body, StoreProgress(store, job), s.home_dir)
    finish(job, result, error)
    store.save(job)
    log.info("job %s: %s", job.id, job.status)
    return {"status": job.status}


class GraceWorker(Worker):
    """RQ's worker with the heartbeat's grace a setting: RQ keeps a running job's lease
    for the monitoring interval + a fixed 60 s, so a job whose whole worker died waited
    at least a minute for another worker."""

    grace_s = 60

    def get_heartbeat_ttl(self, job: Any, working_time: float = 0.0) -> int:
        return int(super().get_heartbeat_ttl(job, working_time)) - 60 + self.grace_s


QUEUES = {"jobs": QUEUE, "train": TRAIN_QUEUE}


def can_train() -> bool:
    """Whether this install has what `llm train` and `embed tune` need (the jobs and
    rag-api images and `make setup` do; a `pip install tunestack[rag]` does not)."""
    return importlib.util.find_spec("peft") is not None  # the train extra's own library


def pick_queues(names: list[str] | None) -> list[str]:
    """The RQ queues to take jobs from, short jobs first: the ones named, or by default
    every queue this install can run."""
    if not names:
        names = ["jobs", "train"] if can_train() else ["jobs"]
    unknown = [n for n in names if n not in QUEUES]
    if unknown:
        raise BadInput(
            f"Unknown queue(s): {', '.join(unknown)}.", hint="Queues: " + ", ".join(QUEUES)
        )
    if "train" in names and not can_train():
        raise BadInput(
            "This install cannot run training jobs (the train extra, peft, is missing).",
            hint="Run the train queue's workers from the jobs image (or after `make setup`).",
        )
    return [QUEUES[n] for n in dict.fromkeys(names)]


def main(queues: list[str] | None = None) -> int:
    """Work until stopped (SIGTERM: the running job ends first; a second one stops it)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    quiet_libraries()
    s = RagSettings()
    if s.queue_url is None:
        print(
            "error: TUNESTACK_QUEUE_URL is not set, so the API runs its jobs itself.\n"
            "hint: set it to the Redis the API uses (redis://host:6379/0) and start again.",
            file=sys.stderr,
        )
        return 2
    try:
        names = pick_queues(queues)
    except BadInput as e:
        print(f"error: {e.message}\nhint: {e.hint}", file=sys.stderr)
        return 2
    url = s.queue_url.get_secret_value()
    redis = connect(url)
    try:
        redis.ping()
    except (RedisDown, RedisTimeout) as e:
        down = unreachable(url, e)
        print(f"error: {down.message}\nhint: {down.hint}", file=sys.stderr)
        return 1
    # Loaded once here, before any fork: each job's work horse starts with them in memory
    # (shared copy-on-write) instead of spending seconds importing them again. Importing
    # starts no threads, so forking after it is safe.
    import sentence_transformers  # noqa: F401
    import torch  # noqa: F401

    worker = GraceWorker(
        [Queue(n, connection=redis) for n in names],
        connection=redis,
        name=f"tunestack-{socket.gethostname()}-{os.getpid()}",
        job_monitoring_interval=s.worker_heartbeat_s,
        maintenance_interval=s.worker_maintenance_s,
        # an idle worker waits on the queue for worker_ttl - 15 s and only then looks for
        # dead workers' jobs: wake it as often as the maintenance is due
        worker_ttl=s.worker_maintenance_s + 15,
    )
    worker.grace_s = s.worker_grace_s
    log.info("worker %s on %s, queues %s", worker.name, where(url), ", ".join(names))
    worker.work(with_scheduler=False)
    return 0


if __name__ == "__main__":
    # `python -m services.rag_api.job_worker [QUEUE ...]`, for images without the CLI: the
    # compose and Helm workers name `jobs`, since their image could also train
    sys.exit(main(sys.argv[1:] or None))
