"""Background jobs with progress that the UI polls (evaluation, reindex, deploy).

An evaluation or a reindex takes from seconds to many minutes; an HTTP request that
blocks that long dies behind proxies and leaves the UI without progress. So the API
queues the work here, answers 202 with a job id at once, and the UI polls
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
from typing import Any

from services.common import atomic
from services.common.errors import Busy, DiskFull, NotFound, TunestackError, disk_full_of
from services.rag_api.http_errors import redact

log = logging.getLogger("tunestack.rag_api.jobs")
_manager_lock = threading.Lock()


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
        }


class Progress:
    """The callback a job body reports through: progress(done, total, message)."""

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


class JobManager:
    def __init__(
        self,
        workers: int = 1,
        keep: int = 200,
        max_active: int = 64,
        state_dir: Path | None = None,
        home: Path | None = None,
    ) -> None:
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._keep = keep
        self._max_active = max_active
        self._state_dir = state_dir
        self._home = home  # TUNESTACK_HOME: a full disk's folder is shown relative to it
        self._closing = False
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tunestack-job")
        if state_dir is not None:
            self._load(state_dir)

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
        job.status, job.finished = "interrupted", time.time()
        job.message = why
        job.error = {
            "error": "Interrupted",
            "message": why,
            "hint": f"Run it again: {job.resume}" if job.resume else "Start it again.",
        }
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
            self._save(job)
        try:
            result = body(Progress(job, self._lock))
        except TunestackError as e:
            error = self._disk_full(job, e) if isinstance(e, DiskFull) else e.to_dict()
            self._finish(job, error=error)
        except Exception as e:  # a job must never die silently: the UI is polling it
            full = disk_full_of(e, self._home)
            if full is not None:
                log.error("job %s (%s) failed: the disk is full (%s)", job.id, job.kind, e)
                self._finish(job, error=self._disk_full(job, full))
                return
            log.exception("job %s (%s) failed", job.id, job.kind)
            self._finish(
                job,
                error={
                    "error": "InternalError",
                    "message": f"The job failed unexpectedly ({type(e).__name__}).",
                    "hint": f"See the rag-api log for job {job.id} (tunestack logs rag-api).",
                },
            )
        else:
            self._finish(job, result=result)

    def _disk_full(self, job: Job, e: DiskFull) -> dict[str, Any]:
        """The clear disk-full error, with the job's own command to run again once space is
        freed, and no server path (the folder is relative to TUNESTACK_HOME)."""
        again = f"run it again: {job.resume}" if job.resume else "start the job again"
        out = e.reworded("the job", again).to_dict()
        roots = (self._home,) if self._home is not None else ()
        return {k: redact(v, roots) if k in ("message", "hint") else v for k, v in out.items()}

    def _finish(
        self,
        job: Job,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        with self._lock:
            job.finished = time.time()
            job.result, job.error = result, error
            job.status = "failed" if error else "done"
            job.message = error["message"] if error else "done"
            self._save(job)


def app_manager(app_state: Any) -> JobManager:
    """The app's job manager (on FastAPI's app.state), made on first use."""
    with _manager_lock:
        jobs: JobManager | None = getattr(app_state, "tunestack_jobs", None)
        if jobs is None:
            jobs = JobManager()
            app_state.tunestack_jobs = jobs
    return jobs
