"""Scale-out proof on one machine: 2 API replicas behind haproxy, Redis, 2 queue workers,
Chroma and the LLM server, under bench/load.py's mixed load; one API replica and one
worker are killed (SIGKILL) mid-run.

    .venv/bin/python bench/scale_out.py [--users 16] [--seconds 60] [--jobs 6]

Everything is the real thing started as `tunestack up` starts it (LocalStack: Chroma, the
llama.cpp server, API #1), plus API #2 (`python -m services.rag_api`), two
`tunestack worker` processes, Debian's redis-server and haproxy (round robin, health
checks on /healthz, a failed connection retried on the other replica). Through haproxy:
the load's users retrieve, chat, embed and ingest, and --jobs reindex jobs are queued
(each for its own copy of the embedder). At a third of the run, API #1 and worker #1 are
killed. Printed: the load's table; the requests haproxy had in flight on API #1 at the
kill (its `scur`) next to the load's errors; then every job's end and attempts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
from _harness import ROOT, children, free_port, redis_server, wait_http
from load import run_load

HAPROXY = """global
  stats socket {sock} mode 600 level admin
defaults
  mode http
  timeout connect 2s
  timeout client 600s
  timeout server 600s
  retries 3
  option redispatch
frontend api
  bind 127.0.0.1:{port}
  default_backend replicas
backend replicas
  balance roundrobin
  option httpchk
  # the API answers only Host names it knows (421 otherwise): send one
  http-check send meth GET uri /healthz ver HTTP/1.1 hdr Host 127.0.0.1
  # as compose/haproxy.cfg: a busy replica's late /healthz is not a dead replica
  timeout check 10s
  default-server inter 1s fall 3 rise 2 observe layer4 error-limit 1 on-error mark-down
  server api1 127.0.0.1:{api1} check
  server api2 127.0.0.1:{api2} check
"""


def parse_scur(show_stat: str, server: str) -> int:
    """Sessions haproxy has open on `server` (scur), from its `show stat` CSV."""
    lines = show_stat.splitlines()
    header = lines[0].lstrip("# ").split(",")
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("svname") == server:
            return int(row["scur"] or 0)
    raise KeyError(server)


def haproxy_stat(sock: Path, server: str) -> int:
    """Sessions haproxy has open on `server` right now, asked on its stats socket."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(sock))
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return parse_scur(data.decode(), server)


async def queue_reindex(c: httpx.AsyncClient, jobs: int) -> list[str]:
    """`jobs` reindex jobs of "load", each into its own embedder copy (minilm-i)."""
    ids = []
    for i in range(jobs):
        r = await c.post("/v1/jobs/reindex", json={"collection": "load", "embedder": f"minilm-{i}"})
        r.raise_for_status()
        ids.append(r.json()["id"])
    return ids


def load_during_chaos(
    url: str,
    users: int,
    seconds: float,
    chaos: Callable[[asyncio.Event], Coroutine[Any, Any, None]],
) -> Any:
    """bench/load.py's users for `seconds` while `chaos` (queue jobs, kill a replica and a
    worker) runs beside them; the load's result."""

    async def run() -> Any:
        seeded = asyncio.Event()  # the load's seed ingest into "load" has finished
        chaos_task = asyncio.create_task(chaos(seeded))
        result = await run_load(url, None, users, seconds, chat_slots=1, seeded=seeded)
        await chaos_task
        return result

    return asyncio.run(run())


def settle_jobs(url: str, ids: list[str], timeout: float = 300) -> list[dict]:
    """Wait for every job to end; print each one's end and attempts, and the totals."""
    deadline = time.monotonic() + timeout
    jobs: list[dict] = []
    while time.monotonic() < deadline:
        jobs = [httpx.get(f"{url}/v1/jobs/{i}", timeout=10).json() for i in ids]
        if all(j["status"] not in ("queued", "running") for j in jobs):
            break
        time.sleep(1)
    for j in jobs:
        print(f"job {j['id']} {j['params']['embedder']}: {j['status']}, attempts {j['attempts']}")
    done = sum(j["status"] == "done" for j in jobs)
    print(
        f"jobs done: {done}/{len(jobs)}; re-run after a worker died: "
        f"{sum(j['attempts'] > 1 for j in jobs)}"
    )
    return jobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--jobs", type=int, default=6)
    args = ap.parse_args()
    for binary in ("redis-server", "haproxy"):
        if shutil.which(binary) is None:
            sys.exit(f"{binary} is not installed (apt-get install {binary})")
    from platform_cli.settings import StackSettings
    from platform_cli.stack import UpOptions
    from platform_cli.stack.local import LocalStack
    from services.common.hashing import dir_fingerprint
    from services.common.registry import Registry

    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    procs: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str], env: dict[str, str], log: str) -> subprocess.Popen[bytes]:
        out = (work / f"{log}.log").open("wb")
        p = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        procs.append(p)
        return p

    redis, os.environ["TUNESTACK_QUEUE_URL"] = redis_server(work)
    procs.append(redis)
    os.environ["TUNESTACK_RAG_WORKER_HEARTBEAT_S"] = "5"
    os.environ["TUNESTACK_RAG_WORKER_MAINTENANCE_S"] = "5"
    os.environ["TUNESTACK_RAG_RATE_PER_MINUTE"] = "100000"
    os.environ["TUNESTACK_RAG_MAX_CONCURRENT"] = "1000"
    s = StackSettings(
        home=work / "home",
        api_port=free_port(),
        chroma_port=free_port(),
        llm_port=free_port(),
        ui_port=free_port(),
    )
    stack = LocalStack(s)
    try:
        print("starting Chroma, the LLM server and API #1 (tunestack up)...", flush=True)
        stack.up(UpOptions(ui=False), lambda m: None)
        env = stack.child_env()
        api1 = stack.pid("rag-api")
        assert api1 is not None, "API #1 did not start"
        api2_port = free_port()
        start(
            [sys.executable, "-m", "services.rag_api"],
            {**env, "TUNESTACK_RAG_PORT": str(api2_port)},
            "api2",
        )
        wait_http(f"http://127.0.0.1:{api2_port}/healthz")
        workers = [
            start([sys.executable, "-m", "platform_cli.main", "worker"], env, f"worker{i}")
            for i in (1, 2)
        ]
        lb_port, sock = free_port(), work / "haproxy.sock"
        cfg = work / "haproxy.cfg"
        cfg.write_text(HAPROXY.format(sock=sock, port=lb_port, api1=s.api_port, api2=api2_port))
        start(["haproxy", "-f", str(cfg)], env, "haproxy")
        url = f"http://127.0.0.1:{lb_port}"
        wait_http(url + "/healthz")
        # embedder copies to reindex into (same weights, their own fingerprints)
        reg = Registry(s.home_dir)
        base = reg.get("embedder", "all-minilm-l6-v2")
        for i in range(args.jobs):
            copy = s.home_dir / f"minilm-{i}"
            shutil.copytree(base.model_path, copy)
            cfg_file = copy / "config_sentence_transformers.json"
            cfg_file.write_text(cfg_file.read_text() + "\n" * (i + 1))
            reg.write(
                base.record.model_copy(
                    update={
                        "name": f"minilm-{i}",
                        "model_path": str(copy),
                        "base_model": "all-minilm-l6-v2",
                        "fingerprint": dir_fingerprint(copy)[:16],
                    }
                ),
                replace=True,
            )

        killed: dict[str, float] = {}

        async def chaos(seeded: asyncio.Event) -> None:
            await seeded.wait()  # reindex needs the whole collection; the kill must not cut it
            started = time.monotonic()
            async with httpx.AsyncClient(base_url=url, timeout=30) as c:
                killed["ids"] = await queue_reindex(c, args.jobs)  # type: ignore[assignment]
            await asyncio.sleep(max(0.0, args.seconds / 3 - (time.monotonic() - started)))
            killed["in_flight_api1"] = haproxy_stat(sock, "api1")
            os.kill(api1, signal.SIGKILL)
            horses = children(workers[0].pid)
            workers[0].kill()
            for pid in horses:
                os.kill(pid, signal.SIGKILL)
            killed["at"] = time.monotonic()

        result = load_during_chaos(url, args.users, args.seconds, chaos)
        print(result.table())
        print(
            f"in flight on API #1 when it was killed (haproxy scur): {killed['in_flight_api1']}; "
            f"load errors: {result.errors}"
        )
        settle_jobs(url, killed["ids"])  # type: ignore[arg-type]
    except BaseException:
        print(f"failed; the logs are in {work}", file=sys.stderr)
        raise
    finally:  # the stack's pidfiles live in `work`: stop everything before removing it
        for p in procs:
            p.kill()
            p.wait(10)
        stack.down()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
