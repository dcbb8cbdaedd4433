"""Where a job runs: in the API's own job thread (local mode) vs on a Redis + RQ worker
that forks a work horse per job (TUNESTACK_QUEUE_URL), vs an RQ worker that runs jobs
in its own process (RQ's SimpleWorker: how Dramatiq and Celery's thread pools run them).

    .venv/bin/python bench/job_queue.py [--jobs 6] [--worker-kill]

Every mode runs the same jobs one after another: each loads the bundled MiniLM embedder
the way the services do and embeds 300 XQuAD-en paragraphs (an evaluation's or a
reindex's shape). Redis is Debian's redis-server on a free port. Printed per mode:
median seconds from enqueue to start (what the queue adds) and per job, the job time and
RSS ratios to the in-process thread, the RSS of the process that stays (the API or the
worker) after the jobs and its peak. Then recovery: a job's process is killed (SIGKILL) 3 s into a
long job: seconds until the job runs again. With --worker-kill, the whole worker is also
killed and a new one started: seconds until it re-runs the job (RQ waits for the dead
worker's heartbeat to expire: worker_heartbeat_s + 60).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _harness import ROOT, children, median, redis_server, xquad_paragraphs

BENCH = Path(__file__).resolve().parent
HOME = Path(tempfile.mkdtemp(prefix="bench-queue-"))


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process, in MB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def embed_job(n: int, seconds: float = 0.0) -> dict[str, Any]:
    """The job: load the embedder (as a job's fresh context does) and embed n paragraphs;
    `seconds` more of embedding for the recovery runs."""
    from _harness import base_embedder

    started = time.time()
    emb = base_embedder(HOME)
    texts = xquad_paragraphs()[:n]
    emb.encode(texts)
    while time.time() - started < seconds:
        emb.encode(texts[:32])
    return {"started": started, "pid": os.getpid()}


# ---- in the API's own thread ---------------------------------------------------------------


def in_process(jobs: int) -> dict[str, Any]:
    pool = ThreadPoolExecutor(max_workers=1)
    waits, walls = [], []
    for _ in range(jobs):
        queued = time.time()
        out = pool.submit(embed_job, 300).result()
        waits.append(out["started"] - queued)
        walls.append(time.time() - queued)
    rss, hwm = rss_mb(os.getpid())
    return {"wait": median(waits), "job": median(walls), "rss": rss, "hwm": hwm}


# ---- on RQ ---------------------------------------------------------------------------------


def start_worker(url: str, fork: bool) -> subprocess.Popen[bytes]:
    cls = "Worker" if fork else "SimpleWorker"
    code = (
        f"import sys; sys.path[:0] = [{str(BENCH)!r}, {str(ROOT)!r}]\n"
        "import torch, sentence_transformers\n"  # preloaded, as `tunestack worker` does
        f"from redis import Redis; from rq import Queue, {cls}\n"
        f"r = Redis.from_url({url!r})\n"
        f"{cls}([Queue('bench', connection=r)], connection=r, job_monitoring_interval=1,"
        " maintenance_interval=2, worker_ttl=17).work(with_scheduler=False)\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=BENCH,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_job(job: Any, timeout: float = 600) -> Any:
    from rq.job import JobStatus

    deadline = time.monotonic() + timeout
    while (status := job.get_status(refresh=True)) not in (JobStatus.FINISHED, JobStatus.FAILED):
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job.id} still {status}")
        time.sleep(0.05)
    if status == JobStatus.FAILED:
        raise RuntimeError(f"job {job.id} failed: {job.latest_result()}")
    return job.return_value()


def on_rq(url: str, jobs: int, fork: bool) -> dict[str, Any]:
    from redis import Redis
    from rq import Queue

    q = Queue("bench", connection=Redis.from_url(url))
    worker = start_worker(url, fork)
    try:
        waits, walls = [], []
        for _ in range(jobs):
            queued = time.time()
            out = wait_job(q.enqueue("job_queue.embed_job", 300))
            waits.append(out["started"] - queued)
            walls.append(time.time() - queued)
        rss, hwm = rss_mb(worker.pid)
    finally:
        worker.terminate()
        worker.wait(30)
    return {"wait": median(waits), "job": median(walls), "rss": rss, "hwm": hwm}


def recovery(url: str, whole_worker: bool) -> float:
    """Seconds from the kill until the killed job runs again."""
    from redis import Redis
    from rq import Queue, Retry

    q = Queue("bench", connection=Redis.from_url(url))
    worker = start_worker(url, fork=True)
    seen: list[float] = []
    try:
        job = q.enqueue("job_queue.embed_job", 64, 8.0, retry=Retry(max=1))
        while job.get_status(refresh=True) != "started":
            time.sleep(0.05)
        time.sleep(3)
        killed = time.time()
        (horse,) = children(worker.pid)
        if whole_worker:  # as when its machine or pod goes: the parent, then its horse
            worker.kill()
            worker.wait(10)
            os.kill(horse, signal.SIGKILL)
            worker = start_worker(url, fork=True)
        else:
            os.kill(horse, signal.SIGKILL)
        seen.append(wait_job(job)["started"] - killed)
    finally:
        worker.terminate()
        worker.wait(30)
    return seen[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=6)
    ap.add_argument("--worker-kill", action="store_true", help="also kill a whole worker")
    args = ap.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    redis, url = redis_server(HOME)
    try:
        rows = {
            "API job thread (in-process)": in_process(args.jobs),
            "RQ worker, fork per job (ours)": on_rq(url, args.jobs, fork=True),
            "RQ SimpleWorker (in-process)": on_rq(url, args.jobs, fork=False),
        }
        base = rows["API job thread (in-process)"]
        print(f"{args.jobs} jobs, one at a time (each: load MiniLM, embed 300 paragraphs)")
        print(
            f"{'mode':32} {'wait s':>7} {'job s':>6} {'job x':>6} {'RSS MB':>7} "
            f"{'peak MB':>7} {'RSS x':>6}"
        )
        for name, r in rows.items():
            print(
                f"{name:32} {r['wait']:7.3f} {r['job']:6.2f} {r['job'] / base['job']:6.2f} "
                f"{r['rss']:7.0f} {r['hwm']:7.0f} {r['rss'] / base['rss']:6.2f}"
            )
        print(f"job process killed: re-run after {recovery(url, False):.1f} s")
        if args.worker_kill:
            print(f"whole worker killed: re-run by a new one after {recovery(url, True):.1f} s")
        print("API job thread: a killed API loses the job (marked interrupted, not re-run)")
    finally:
        redis.terminate()
        redis.wait(10)
        shutil.rmtree(HOME, ignore_errors=True)


if __name__ == "__main__":
    main()
