"""Jobs on Redis + RQ: the API enqueues, `tunestack worker` processes run them, and every
API replica reports every job.

Why RQ (README "Scaling out" has the measured figures, bench/job_queue.py reruns them):
a worker forks one work horse per job, so a job's models and memory go back to the OS when
it ends and a job killed by the kernel (out of memory) takes only itself down; the parent
retries it at once. A worker killed outright stops heart-beating, and another worker's
maintenance re-runs its job after worker_heartbeat_s + worker_grace_s. Jobs are JSON (a kind and its
arguments) so nothing but our own code is unpickled from Redis.

RQ delivers and retries; the job record the UI polls (status, progress, result, error)
is our own Job (services.rag_api.jobs), stored as JSON under tunestack:job:<id>, so a
local and a queued job read the same. A key (a double-clicked Reindex) maps to its active
job under a Redis lock, so two replicas never queue the same work twice.
"""

from __future__ import annotations

import builtins
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any
from urllib.parse import urlsplit

from redis import Redis
from redis.exceptions import ConnectionError as RedisDown
from redis.exceptions import TimeoutError as RedisTimeout
from rq import Queue, Retry, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job as RqJob
from rq.job import JobStatus

from services.common.errors import Busy, NotFound, ServiceUnavailable
from services.rag_api.jobs import Job, JobSpec
from services.rag_api.settings import RagSettings

log = logging.getLogger("tunestack.rag_api.job_queue")

QUEUE = "tunestack"
# Tuning and training take the training library (peft) and hours, not minutes: they
# have a queue of their own, which only workers that can run them listen on, so a
# worker of the API's image never picks one up, and a long training run never holds up
# the evaluations and reindexes behind it.
TRAIN_QUEUE = "tunestack-train"
TRAINING_KINDS = ("tune", "train")
PREFIX = "tunestack:"
INDEX = PREFIX + "jobs"  # sorted set: job id -> created
EXECUTE = "services.rag_api.job_worker.execute"


def where(url: str) -> str:
    """host:port/db of a Redis URL, never its password (for messages and logs)."""
    u = urlsplit(url)
    return f"{u.hostname or 'localhost'}:{u.port or 6379}{u.path or ''}"


def connect(url: str) -> Redis:
    return Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30)


def unreachable(url: str, e: BaseException) -> ServiceUnavailable:
    return ServiceUnavailable(
        "queue",
        f"The job queue (Redis at {where(url)}) is not reachable ({type(e).__name__}).",
        hint="Start Redis (redis-server; on Kubernetes the chart's redis pod), or unset "
        "TUNESTACK_QUEUE_URL to run jobs inside the API.",
    )


class JobStore:
    """Job records in Redis, shared by API replicas and workers."""

    def __init__(self, redis: Any, keep: int = 200) -> None:
        self.redis = redis
        self.keep = keep

    def load(self, job_id: str) -> Job | None:
        raw = self.redis.get(PREFIX + "job:" + job_id)
        return None if raw is None else Job(**json.loads(raw))

    def save(self, job: Job) -> None:
        self.redis.set(PREFIX + "job:" + job.id, json.dumps(asdict(job)))

    def recent(self) -> builtins.list[Job]:
        ids = [i.decode() for i in self.redis.zrevrange(INDEX, 0, self.keep - 1)]
        if not ids:
            return []
        raws = self.redis.mget([PREFIX + "job:" + i for i in ids])
        return [Job(**json.loads(r)) for r in raws if r is not None]

    def add(self, job: Job) -> None:
        self.save(job)
        self.redis.zadd(INDEX, {job.id: job.created})
        # beyond the newest `keep`, finished records go (an active one is never dropped)
        for raw in self.redis.zrange(INDEX, 0, -self.keep - 1):
            old = self.load(raw.decode())
            if old is None or not old.active:
                self.redis.zrem(INDEX, raw)
                self.redis.delete(PREFIX + "job:" + raw.decode())


class RedisJobs:
    """The JobQueue of an API whose jobs run on queue workers."""

    def __init__(
        self,
        url: str,
        *,
        max_active: int = 64,
        retries: int = 2,
        timeout_s: int = 6 * 3600,
        keep: int = 200,
    ) -> None:
        self.url = url
        self.store = JobStore(connect(url), keep)
        self.queue = Queue(QUEUE, connection=self.store.redis)
        self.train_queue = Queue(TRAIN_QUEUE, connection=self.store.redis)
        self.max_active = max_active
        self.retries = retries
        self.timeout_s = timeout_s

    @classmethod
    def from_settings(cls, s: RagSettings) -> RedisJobs:
        assert s.queue_url is not None
        return cls(
            s.queue_url.get_secret_value(),
            max_active=s.max_jobs,
            retries=s.job_retries,
            timeout_s=s.job_timeout_s,
        )

    @contextmanager
    def _reachable(self) -> Iterator[None]:
        try:
            yield
        except (RedisDown, RedisTimeout) as e:
            raise unreachable(self.url, e) from None

    def enqueue(self, spec: JobSpec) -> dict[str, Any]:
        with self._reachable(), self.store.redis.lock(PREFIX + "lock:enqueue", timeout=30):
            jobs = [self._settled(j) for j in self.store.recent()]
            if spec.key is not None:
                for job in jobs:
                    if job.key == spec.key and job.active:
                        return job.info()
            active = sum(j.active for j in jobs)
            if active >= self.max_active:
                raise Busy(
                    f"{active} jobs are queued or running (the limit is {self.max_active}).",
                    hint="Wait for some to finish (GET /v1/jobs) and try again.",
                    retry_after=30,
                )
            job = Job(
                uuid.uuid4().hex[:12],
                spec.kind,
                spec.params,
                spec.key,
                resume=spec.resume,
                args=spec.args,
                message="waiting for a worker",
            )
            queue = self.queue
            if spec.kind in TRAINING_KINDS:
                queue = self.train_queue
                if not Worker.all(queue=queue):
                    job.message = (
                        "waiting for a worker that can train (none is running: start "
                        "`tunestack worker --queues train` where the training libraries are)"
                    )
            self.store.add(job)
            queue.enqueue(
                EXECUTE,
                job.id,
                job_id=job.id,
                retry=Retry(max=self.retries) if self.retries else None,
                job_timeout=self.timeout_s,
                result_ttl=3600,
                failure_ttl=7 * 24 * 3600,
                description=f"tunestack {job.kind} {job.id}",
            )
        return job.info()

    def get(self, job_id: str) -> dict[str, Any]:
        with self._reachable():
            job = self.store.load(job_id)
            if job is None:
                raise NotFound(
                    f"No job '{job_id}'.",
                    hint="GET /v1/jobs lists the jobs the queue knows (the newest 200).",
                )
            return self._settled(job).info()

    def list(self) -> builtins.list[dict[str, Any]]:
        with self._reachable():
            return [self._settled(j).info() for j in self.store.recent()]

    def shutdown(self) -> None:
        """Nothing to stop: the jobs belong to the workers, not to this API replica."""

    def ready(self) -> dict[str, Any]:
        """/readyz's check: Redis answers, and how many workers are there to run jobs."""
        try:
            self.store.redis.ping()
            workers = len(Worker.all(queue=self.queue))
            trainers = len(Worker.all(queue=self.train_queue))
        except Exception as e:
            return {"url": where(self.url), "ok": False, "error": type(e).__name__}
        return {"url": where(self.url), "ok": True, "workers": workers, "train_workers": trainers}

    def _settled(self, job: Job) -> Job:
        """An active record whose RQ job is gone or failed is interrupted, not "running"
        forever: its worker died more often than it may be retried, or Redis lost it."""
        if not job.active:
            return job
        try:
            status = RqJob.fetch(job.id, connection=self.store.redis).get_status()
        except NoSuchJobError:
            if time.time() - job.created < 60:  # being enqueued by another replica
                return job
            status = None
        if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED, None):
            job.interrupt(
                f"The job's worker stopped {job.attempts} time(s) while running it."
                if job.attempts
                else "The queue lost this job before a worker started it."
            )
            self.store.save(job)
        return job


class StoreProgress:
    """A worker's progress callback: the record in Redis, written at most 4 times a second
    (a reindex reports every batch) and always at the end."""

    def __init__(self, store: JobStore, job: Job, every_s: float = 0.25) -> None:
        self._store = store
        self._job = job
        self._every = every_s
        self._last = 0.0
        self._lock = threading.Lock()

    def __call__(self, done: int, total: int, message: str | None = None) -> None:
        with self._lock:
            self._job.done, self._job.total = done, total
            if message is not None:
                self._job.message = message
            now = time.monotonic()
            if now - self._last >= self._every or (total and done >= total):
                self._last = now
                self._store.save(self._job)
