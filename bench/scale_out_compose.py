"""Scale-out proof under docker compose: compose/compose.scale.yml (2 API replicas behind
Debian's haproxy, Debian's redis-server, 2 queue workers, milvus-lite's server, the
llama.cpp server, one shared registry volume) under bench/load.py's mixed load; one API
replica and one worker container are killed (`docker kill`, SIGKILL) mid-run.

    .venv/bin/python bench/scale_out_compose.py [--users 16] [--seconds 60] [--jobs 6]
    .venv/bin/python bench/scale_out_compose.py --build-only    (the images only)

The images are built offline as `make test-compose` builds them (a debootstrapped base,
this machine's wheels and CA bundle; infra/ci/base_image.sh, infra/ci/wheelhouse.sh).
Through the balancer the load's users retrieve, chat, embed and ingest, and --jobs
reindex jobs are queued (each into its own copy of the embedder, made inside the shared
volume). At a third of the run api-1 and worker-1 are killed. Printed: the load's table,
the requests haproxy had in flight on api-1 at the kill next to the load's errors, and
every job's end and attempts. The stack and its volumes are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _harness import ROOT, free_port, wait_http
from scale_out import (
    load_during_chaos,
    parse_scur,
    queue_reindex,
    settle_jobs,
)

PROJECT = "tunestack-scale"
FILE = ROOT / "compose" / "compose.scale.yml"
V2_PLUGIN = ROOT / ".cache" / "docker-v2"

COPY_EMBEDDERS = """
import shutil, sys
from services.common.hashing import dir_fingerprint
from services.common.registry import Registry
from services.common.settings import CommonSettings
reg = Registry(CommonSettings().home_dir)
base = reg.ensure("embedder", "all-minilm-l6-v2").record
for i in range(int(sys.argv[1])):
    copy = reg.home / f"minilm-{i}"
    shutil.copytree(base.model_path, copy, dirs_exist_ok=True)
    f = copy / "config_sentence_transformers.json"
    f.write_text(f.read_text() + "\\n" * (i + 1))
    reg.write(base.model_copy(update={"name": f"minilm-{i}", "model_path": str(copy),
        "base_model": "all-minilm-l6-v2", "fingerprint": dir_fingerprint(copy)[:16]}),
        replace=True)
"""

SHOW_STAT = """
import socket
s = socket.socket(socket.AF_UNIX); s.connect("/tmp/haproxy.sock"); s.sendall(b"show stat\\n")
while chunk := s.recv(65536):
    print(chunk.decode(), end="")
"""


STAT_FIELDS = ("status", "chkfail", "chkdown", "downtime", "econ", "eresp", "hrsp_5xx")


def server_states(show_stat: str) -> dict[str, dict[str, str]]:
    """haproxy's view of each API replica after the run: its state, failed health checks,
    transitions to DOWN, seconds down, connection and response errors, 5xx answers."""
    lines = show_stat.splitlines()
    header = lines[0].lstrip("# ").split(",") if lines else []
    rows = (dict(zip(header, line.split(","), strict=False)) for line in lines[1:])
    return {
        r["svname"]: {k: r.get(k, "") for k in STAT_FIELDS}
        for r in rows
        if r.get("svname", "").startswith("api-")
    }


def error_timeline(result: object, kill_at: float, bin_s: float = 5.0) -> dict[str, int]:
    """The load's errors per `bin_s` seconds relative to the kill ("-5" = the 5 s before,
    "0" = the first 5 s after): errors at the kill are cut requests, later ones are not."""
    bins: dict[str, int] = {}
    for op in result.ops.values():  # type: ignore[attr-defined]
        for at in op.error_at:
            key = str(int((at - kill_at) // bin_s * bin_s))
            bins[key] = bins.get(key, 0) + 1
    return dict(sorted(bins.items(), key=lambda kv: float(kv[0])))


def compose_cmd() -> tuple[list[str], dict[str, str]]:
    """The compose v2 plugin (its own or .cache/docker-v2's), else docker-compose v1."""
    for config in (os.environ.get("DOCKER_CONFIG"), str(V2_PLUGIN)):
        env = {**os.environ, **({"DOCKER_CONFIG": config} if config else {})}
        if (
            subprocess.run(
                ["docker", "compose", "version"], capture_output=True, env=env
            ).returncode
            == 0
        ):
            return ["docker", "compose"], env
    if shutil.which("docker-compose"):
        return ["docker-compose"], dict(os.environ)
    sys.exit("no docker compose: run `make test-compose` once (it installs Docker and compose)")


def installer_compose(fallback: list[str]) -> list[str]:
    """The compose infra/desktop/install.sh builds with: the machine's own v2 plugin, else
    docker-compose v1, else `fallback`.

    Building the scale profile with the same builder as the installer reuses its cache:
    v1 builds with Docker's classic builder and the .cache v2 plugin with BuildKit, which
    keep separate caches, so CI built every image twice and held two copies (about 15 GB
    each) on a disk that then failed the installer's free-space check (2026-12-07).
    """
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else fallback


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--jobs", type=int, default=6)
    ap.add_argument("--keep", action="store_true", help="leave the stack up at the end")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    ap.add_argument(
        "--build-only", action="store_true", help="build the images, start nothing (CI's step)"
    )
    args = ap.parse_args()
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        sys.exit("Docker does not answer: start dockerd (make test-compose shows how)")
    cmd, env = compose_cmd()
    work = Path(tempfile.mkdtemp(prefix="bench-scale-compose-"))
    port = free_port()
    dotenv = work / "scale.env"
    ours = {
        "COMPOSE_PROJECT_NAME": PROJECT,
        "TUNESTACK_API_PORT": str(port),
        "TUNESTACK_UI_PORT": str(free_port()),
        "TUNESTACK_REDIS_PASSWORD": secrets.token_hex(16),
        "TUNESTACK_RAG_WORKER_GRACE_S": "10",
        "TUNESTACK_RAG_WORKER_HEARTBEAT_S": "5",
        "TUNESTACK_RAG_WORKER_MAINTENANCE_S": "5",
        "TUNESTACK_RAG_RATE_PER_MINUTE": "100000",
        "TUNESTACK_RAG_MAX_CONCURRENT": "1000",
        "HF_HUB_OFFLINE": "1",
        "BASE_IMAGE": "tunestack/base:bookworm",
        "WHEELHOUSE": ".cache/wheelhouse",
        "EXTRA_CA_CERTS": ".cache/certs",
        "PIP_NO_INDEX": "1",
    }
    dotenv.write_text((ROOT / "compose" / ".env.example").read_text())
    # a variable in compose's environment wins over its env file: `make test-compose`'s
    # script exports its own stack's ports and project, so ours go in the environment too
    env = {**env, **ours}
    project = ["--env-file", str(dotenv), "-f", str(FILE), "-p", PROJECT]

    def dc(
        *a: str, check: bool = True, via: list[str] = cmd, **kw: object
    ) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([*via, *project, *a], env=env, text=True, cwd=ROOT, **kw)  # type: ignore[call-overload]
        if check and r.returncode != 0:
            raise SystemExit(f"{' '.join(a)} failed ({r.returncode})")
        return r

    t0 = time.monotonic()
    print("images: base, wheelhouse, build (offline)...", flush=True)
    py = {**os.environ, "PYTHON": str(ROOT / ".venv" / "bin" / "python")}
    subprocess.run(
        ["infra/ci/base_image.sh", "tunestack/base:bookworm"], cwd=ROOT, check=True, env=py
    )
    subprocess.run(["infra/ci/wheelhouse.sh", ".cache/wheelhouse"], cwd=ROOT, check=True)
    (ROOT / ".cache" / "certs").mkdir(parents=True, exist_ok=True)
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", ROOT / ".cache/certs/host-ca-bundle.crt")
    dc("build", via=installer_compose(cmd))
    built = time.monotonic() - t0
    if args.build_only:
        print(f"built in {built:.0f} s", flush=True)
        return
    try:
        dc("down", "--volumes", check=False, capture_output=True)
        t1 = time.monotonic()
        dc("up", "-d")
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/healthz", timeout=600)
        wait_http(url + "/readyz", timeout=600)
        print(f"built in {built:.0f} s; up and ready through the balancer in "
              f"{time.monotonic() - t1:.0f} s", flush=True)  # fmt: skip
        dc("exec", "-T", "api-1", "python", "-c", COPY_EMBEDDERS, str(args.jobs))
        killed: dict[str, object] = {}

        async def chaos(seeded: asyncio.Event) -> None:
            # after the seed ingest: a replica killed while it still wrote the collection
            # failed the whole run under a loaded CPU (a 502 to the seed, 2026-12-07)
            await seeded.wait()
            started = time.monotonic()
            async with httpx.AsyncClient(base_url=url, timeout=30) as c:
                # queued just before the kill, so that both workers are running one
                await asyncio.sleep(max(0.0, args.seconds / 3 - 5 - (time.monotonic() - started)))
                ids = await queue_reindex(c, args.jobs)
                killed["ids"] = ids
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    states = [(await c.get(f"/v1/jobs/{i}")).json()["status"] for i in ids]
                    if states.count("running") >= 2:
                        break
                    await asyncio.sleep(0.2)
                killed["running_at_kill"] = states.count("running")
            stat = dc("exec", "-T", "lb", "python", "-c", SHOW_STAT, capture_output=True)
            killed["in_flight_api1"] = parse_scur(stat.stdout, "api-1")
            for name in ("api-1", "worker-1"):
                dc("kill", "-s", "SIGKILL", name, capture_output=True)
            killed["at"] = time.monotonic()

        result = load_during_chaos(url, args.users, args.seconds, chaos)
        print(result.table())
        print(
            f"in flight on api-1 when it was killed (haproxy scur): {killed['in_flight_api1']}; "
            f"load errors: {result.errors}; jobs running on the 2 workers at the kill: "
            f"{killed['running_at_kill']}"
        )
        jobs = settle_jobs(url, killed["ids"])  # type: ignore[arg-type]
        stat = dc("exec", "-T", "lb", "python", "-c", SHOW_STAT, capture_output=True)
        containers = {}
        for name in ("api-1", "api-2", "worker-1", "worker-2", "milvus", "llm", "redis", "lb"):
            cid = dc("ps", "-q", name, capture_output=True, check=False).stdout.strip()
            fmt = "{{.RestartCount}} {{.State.OOMKilled}} {{.State.Status}}"
            got = subprocess.run(
                ["docker", "inspect", "-f", fmt, cid], capture_output=True, text=True
            ).stdout.split()
            if len(got) == 3:
                containers[name] = {"restarts": int(got[0]), "oom_killed": got[1], "state": got[2]}
        diagnostics = {
            "errors_per_5s_from_kill": error_timeline(result, killed["at"]),  # type: ignore[arg-type]
            "haproxy": server_states(stat.stdout),
            "containers": containers,
        }
        print(f"errors per 5 s from the kill: {diagnostics['errors_per_5s_from_kill']}")
        print(f"haproxy after the run: {diagnostics['haproxy']}")
        print(f"containers: {containers}")
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "requests": result.requests,
                        "errors": result.errors,
                        "in_flight_api1_at_kill": killed["in_flight_api1"],
                        "jobs_running_at_kill": killed["running_at_kill"],
                        "jobs": [{k: j[k] for k in ("id", "status", "attempts")} for j in jobs],
                        "build_s": round(built, 1),
                        "diagnostics": diagnostics,
                    }
                )
            )
    except BaseException:
        dc("logs", "--tail", "40", check=False)
        raise
    finally:
        if not args.keep:
            dc("down", "--volumes", check=False, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
