"""Background jobs with progress that the UI polls (evaluation, reindex, deploy).

An evaluation or a reindex takes from seconds to many minutes; an HTTP request that
blocks that long dies behind proxies and leaves the UI without progress. So the API
queues the work here, answers 202 with a job id at once, and the UI polls
GET /v1/jobs/{id}. One worker thread runs jobs in order: evaluation and reindex are
CPU-bound, and running two at once on a small machine only makes both slower and starves
retrieval; a deploy (upload to Ollama, one generate, the switch) waits its turn too.

Jobs live in the API process (a restart forgets them; their results, the report folder
or the new Chroma build, persist). Run the API with one uvicorn worker when the UI
polls jobs, as the default does.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import NotFound, TunestackError

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
    def __init__(self, workers: int = 1, keep: int = 200) -> None:
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._keep = keep
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tunestack-job")

    def submit(
        self, kind: str, params: dict[str, Any], body: JobBody, key: str | None = None
    ) -> Job:
        """Queue `body`; a queued or running job with the same key is returned instead.

        The key makes a double-clicked "Reindex" (or two browser tabs) one job, not two
        that race to write the same Chroma build.
        """
        with self._lock:
            if key is not None:
                for job in self._jobs.values():
                    if job.key == key and job.active:
                        return job
            job = Job(uuid.uuid4().hex[:12], kind, params, key)
            self._jobs[job.id] = job
            self._trim()
        self._pool.submit(self._run, job, body)
        return job

    def get(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise NotFound(
                    f"No job '{job_id}'.",
                    hint="Jobs live in the API process and are forgotten when it restarts; "
                    "GET /v1/jobs lists the current ones.",
                )
            return job.info()

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [j.info() for j in reversed(self._jobs.values())]

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _trim(self) -> None:
        done = [k for k, j in self._jobs.items() if not j.active]
        for k in done[: max(0, len(self._jobs) - self._keep)]:
            del self._jobs[k]

    def _run(self, job: Job, body: JobBody) -> None:
        with self._lock:
            job.status, job.started, job.message = "running", time.time(), "starting"
        try:
            result = body(Progress(job, self._lock))
        except TunestackError as e:
            self._finish(job, error=e.to_dict())
        except Exception as e:  # a job must never die silently: the UI is polling it
            log.exception("job %s (%s) failed", job.id, job.kind)
            self._finish(
                job,
                error={
                    "error": "InternalError",
                    "message": f"{type(e).__name__}: {e}",
                    "hint": "See the rag-api log (tunestack logs rag-api).",
                },
            )
        else:
            self._finish(job, result=result)

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


def app_manager(app_state: Any) -> JobManager:
    """The app's job manager (on FastAPI's app.state), made on first use."""
    with _manager_lock:
        jobs: JobManager | None = getattr(app_state, "tunestack_jobs", None)
        if jobs is None:
            jobs = JobManager()
            app_state.tunestack_jobs = jobs
    return jobs
