"""Background jobs with progress that the UI polls (evaluation, reindex, deploy).

Routes describe a job as data (JobSpec: kind, public params, JSON args) and hand it to the
app's JobQueue. Two queues implement it: JobManager here, in the API process (local mode,
no extra server), and services.rag_api.job_queue.RedisJobs, where workers in other
processes or machines run the jobs and any API replica reports them
(TUNESTACK_QUEUE_URL). Both run the same bodies (services.rag_api.job_bodies.run_job) and
turn failures into the same error records (job_outcome).

In the API process: an evaluation or a reindex takes from seconds to many minutes; an
HTTP request that blocks that long dies behind proxies and leaves the UI without
progress. So the API queues the work here, answers 202 with a job id at once, and the UI polls
GET /v1/jobs/{id}. One worker thread runs jobs in order: evaluation and reindex are
CPU-bound, and running two at once on a small machine only makes both slower and starves
retrieval; a deploy (upload to Ollama, one generate, the switch) waits its turn too.

Jobs run in the API process, but their state is written to TUNESTACK_HOME/run/jobs/ at
every change of status: after a restart (or a kill -9) the API lists them again, and a job
that was queued or running is marked `interrupted` with the command that does it again.
The queue is bounded (TUNESTACK_RAG_MAX_JOBS; more is a 429), and a shutting-down API
starts nothing new: what is still queued is marked interrupted, not run half-way.
Run the API with one uvicorn worker when the UI polls jobs, as the default does.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from services.common import atomic
from services.common.errors import Busy, DiskFull, NotFound, TunestackError, disk_full_of
from services.rag_api.http_errors import redact

log = logging.getLogger("tunestack.rag_api.jobs")


@dataclass
class Job:
    id: str
    kind: str
    params: dict[str, Any]
    key: str | None = None
    status: str = "queued"
    done: int = 0
    total: int = 0
    message: str = "waiting for the previous job"
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    resume: str | None = None
    args: dict[str, Any] = field(default_factory=dict)  # what the body needs; never shown
    attempts: int = 0  # runs started: a queue worker that died mid-job makes it 2

    @property
    def active(self) -> bool:
        return self.status in ("queued", "running")

    def info(self) -> dict[str, Any]:
        if self.status == "done":
            progress = 1.0
        else:
            progress = min(1.0, self.done / self.total) if self.total else 0.0
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "done": self.done,
            "total": self.total,
            "progress": round(progress, 4),
            "message": self.message,
            "params": self.params,
            "result": self.result,
            "error": self.error,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "resume": self.resume,
            "attempts": self.attempts,
        }

    def interrupt(self, why: str) -> None:
        self.status, self.finished = "interrupted", time.time()
        self.message = why
        self.error = {
            "error": "Interrupted",
            "message": why,
            "hint": f"Run it again: {self.resume}" if self.resume else "Start it again.",
        }


@dataclass(frozen=True)
class JobSpec:
    """A job as a route asks for it. `params` are shown (GET /v1/jobs); `args` are what the
    body needs (server paths included) and stay inside; `key` makes a second request for
    the same work (a double-clicked Reindex) the same job; `resume` is the CLI command that
    does it again if it is interrupted."""

    kind: str
    params: dict[str, Any]
    args: dict[str, Any]
    key: str | None = None
    resume: str | None = None


class JobQueue(Protocol):
    """What the routes use, whichever queue runs the jobs."""

    def enqueue(self, spec: JobSpec) -> dict[str, Any]: ...

    def get(self, job_id: str) -> dict[str, Any]: ...

    def list(self) -> builtins.list[dict[str, Any]]: ...

    def shutdown(self) -> None: ...


class Progress(Protocol):
    """The callback a job body reports through: progress(done, total, message)."""

    def __call__(self, done: int, total: int, message: str | None = None) -> None: ...


class LockedProgress:
    """Progress written into a Job under a lock (the pollers read it under the same)."""

    def __init__(self, job: Job, lock: threading.Lock) -> None:
        self._job = job
        self._lock = lock

    def __call__(self, done: int, total: int, message: str | None = None) -> None:
        with self._lock:
            self._job.done = done
            self._job.total = total
            if message is not None:
                self._job.message = message


JobBody = Callable[[Progress], dict[str, Any]]
# (kind, args, progress, the caller's event loop or None) -> result: job_bodies.run_job
Runner = Callable[[str, dict[str, Any], Progress, asyncio.AbstractEventLoop | None], dict[str, Any]]


def job_outcome(
    job: Job, body: JobBody, progress: Progress, home: Path | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(result, None) or (None, error): a job never dies silently, since a UI is polling it.
    A known failure keeps its message and hint; a full disk names the job's command to run
    again (no server path); anything else is logged with its traceback and shown as a
    one-line InternalError that points at the log."""
    try:
        return body(progress), None
    except TunestackError as e:
        return None, (disk_full_error(job, e, home) if isinstance(e, DiskFull) else e.to_dict())
    except Exception as e:
        full = disk_full_of(e, home)
        if full is not None:
            log.error("job %s (%s) failed: the disk is full (%s)", job.id, job.kind, e)
            return None, disk_full_error(job, full, home)
        log.exception("job %s (%s) failed", job.id, job.kind)
        return None, {
            "error": "InternalError",
            "message": f"The job failed unexpectedly ({type(e).__name__}).",
            "hint": f"See the log of the process that ran job {job.id} "
            "(tunestack logs rag-api, or the worker's).",
        }


def disk_full_error(job: Job, e: DiskFull, home: Path | None) -> dict[str, Any]:
    """The clear disk-full error, with the job's own command to run again once space is
    freed, and no server path (the folder is relative to TUNESTACK_HOME)."""
    again = f"run it again: {job.resume}" if job.resume else "start the job again"
    out = e.reworded("the job", again).to_dict()
    roots = (home,) if home is not None else ()
    return {k: redact(v, roots) if k in ("message", "hint") else v for k, v in out.items()}


def finish(job: Job, result: dict[str, Any] | None, error: dict[str, Any] | None) -> None:
    job.finished = time.time()
    job.result, job.error = result, error
    job.status = "failed" if error else "done"
    job.message = error["message"] if error else "done"


class JobManager:
    def __init__(
        self,
        workers: int = 1,
        keep: int = 200,
        max_active: int = 64,
        state_dir: Path | None = None,
        home: Path | None = None,
        runner: Runner | None = None,
    ) -> None:
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._keep = keep
        self._max_active = max_active
        self._state_dir = state_dir
        self._home = home  # TUNESTACK_HOME: a full disk's folder is shown relative to it
        self._closing = False
        self._runner = runner
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tunestack-job")
        if state_dir is not None:
            self._load(state_dir)

    def enqueue(self, spec: JobSpec) -> dict[str, Any]:
        """Queue a described job; its body is the runner's, given the caller's event loop
        (an async route's) so work that talks to the LLM uses the API's own clients."""
        runner = self._runner
        if runner is None:
            raise RuntimeError("this JobManager was made without a runner")
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None

        def body(progress: Progress) -> dict[str, Any]:
            return runner(spec.kind, spec.args, progress, loop)

        job = self.submit(spec.kind, spec.params, body, key=spec.key, resume=spec.resume)
        return job.info()

    def submit(
        self,
        kind: str,
        params: dict[str, Any],
        body: JobBody,
        key: str | None = None,
        resume: str | None = None,
    ) -> Job:
        """Queue `body`; a queued or running job with the same key is returned instead.

        The key makes a double-clicked "Reindex" (or two browser tabs) one job, not two
        that race to write the same Chroma build. `resume` is the CLI command that does the
        same work, shown if the API stops before the job ends.
        """
        with self._lock:
            if key is not None:
                for job in self._jobs.values():
                    if job.key == key and job.active:
                        return job
            active = sum(j.active for j in self._jobs.values())
            if self._closing or active >= self._max_active:
                raise Busy(
                    "The API is shutting down."
                    if self._closing
                    else f"{active} jobs are queued or running (the limit is {self._max_active}).",
                    hint="Wait for some to finish (GET /v1/jobs) and try again.",
                    retry_after=30,
                )
            job = Job(uuid.uuid4().hex[:12], kind, params, key, resume=resume)
            self._jobs[job.id] = job
            self._trim()
            self._save(job)
        self._pool.submit(self._run, job, body)
        return job

    def get(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise NotFound(
                    f"No job '{job_id}'.",
                    hint="GET /v1/jobs lists the jobs this API knows (the newest 200).",
                )
            return job.info()

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [j.info() for j in reversed(self._jobs.values())]

    def shutdown(self) -> None:
        """Start nothing more: queued jobs are marked interrupted (with their command)."""
        with self._lock:
            self._closing = True
            for job in self._jobs.values():
                if job.status == "queued":
                    self._interrupt(job, "The API stopped before this job started.")
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ---- state on disk -------------------------------------------------------------------

    def _save(self, job: Job) -> None:
        if self._state_dir is None:
            return
        try:
            atomic.write_json(self._state_dir / f"{job.id}.json", asdict(job))
        except OSError as e:  # a full disk must not kill the job; the log says why
            log.warning("could not save job %s: %s", job.id, e)

    def _load(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        found: list[Job] = []
        for path in state_dir.glob("*.json"):
            try:
                found.append(Job(**json.loads(path.read_text(encoding="utf-8"))))
            except (OSError, ValueError, TypeError):
                log.warning("ignoring unreadable job file %s", path.name)
        for job in sorted(found, key=lambda j: j.created):
            self._jobs[job.id] = job
            if job.active:
                self._interrupt(job, "The API stopped while this job was " + job.status + ".")
        for k in self._trim():
            (state_dir / f"{k}.json").unlink(missing_ok=True)

    def _interrupt(self, job: Job, why: str) -> None:
        job.interrupt(why)
        self._save(job)

    def _trim(self) -> builtins.list[str]:
        done = [k for k, j in self._jobs.items() if not j.active]
        gone = done[: max(0, len(self._jobs) - self._keep)]
        for k in gone:
            del self._jobs[k]
            if self._state_dir is not None:
                (self._state_dir / f"{k}.json").unlink(missing_ok=True)
        return gone

    # ---- running ---------------------------------------------------------------------------

    def _run(self, job: Job, body: JobBody) -> None:
        with self._lock:
            if self._closing or job.status != "queued":
                return
            job.status, job.started, job.message = "running", time.time(), "starting"
            job.attempts += 1
            self._save(job)
        result, error = job_outcome(job, body, LockedProgress(job, self._lock), self._home)
        with self._lock:
            finish(job, result, error)
            self._save(job)


def app_jobs(app_state: Any) -> JobQueue:
    """The app's job queue (on FastAPI's app.state, set by create_app)."""
    jobs: JobQueue = app_state.tunestack_jobs
    return jobs
