"""Docker stack bench: cold build time and size of each image, time from `tunestack up` to
all-healthy (fresh volumes, then existing ones), and idle resident memory per container.

    .venv/bin/python bench/compose_up.py [--warm] [--llm llamacpp]

Needs a Docker engine. Builds go through compose/Dockerfile with the build variables in
the environment (.env or exported: BASE_IMAGE, WHEELHOUSE, PIP_NO_INDEX, ...), so on a
machine without a registry run it the way CI does (infra/ci/compose_e2e.sh prepares the
base image and the wheelhouse). "Cold" means an empty build cache: targets are built in
the order CI builds them, so the first one also pays for the shared base and wheel stages
and each later one only for its own layers (the classic builder, as docker-compose v1
uses, builds preceding stages too; they are cached by then). `--warm` keeps the cache.
Uses its own compose project and free ports, so a running desktop stack is left alone.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from platform_cli.settings import StackSettings  # noqa: E402
from platform_cli.stack.compose import ComposeStack, docker_client, tunestack_version  # noqa: E402

TARGETS = ("ui", "llamacpp", "chroma", "rag-api", "jobs")
BUILD_VARS = {
    "BASE_IMAGE": "BASE_IMAGE",
    "PIP_INDEX_URL": "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL": "PIP_EXTRA_INDEX_URL",
    "PIP_TRUSTED_HOST": "PIP_TRUSTED_HOST",
    "PIP_NO_INDEX": "PIP_NO_INDEX",
    "WHEELHOUSE": "WHEELHOUSE",
    "EXTRA_CA_CERTS": "EXTRA_CA_CERTS",
    "TORCH_INDEX_URL": "TORCH_INDEX_URL",
    "TUNESTACK_UID": "APP_UID",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_args() -> list[str]:
    from dotenv import dotenv_values

    env = {**dotenv_values(ROOT / ".env"), **os.environ}
    out: list[str] = []
    for var, arg in BUILD_VARS.items():
        if env.get(var):
            out += ["--build-arg", f"{arg}={env[var]}"]
    return out


def image_name(target: str) -> str:
    prefix = os.environ.get("TUNESTACK_IMAGE_PREFIX", "tunestack")
    tag = os.environ.get("TUNESTACK_VERSION", tunestack_version())
    return f"{prefix}/{target}:{'1.5.9' if target == 'chroma' else tag}"


def clear_build_cache(client: Any) -> None:
    for target in TARGETS:
        with contextlib.suppress(Exception):
            client.images.remove(image_name(target), force=True)
    # untagged build-cache images of the classic builder, and BuildKit's cache
    subprocess.run(["docker", "image", "prune", "-f"], capture_output=True)
    subprocess.run(["docker", "builder", "prune", "-af"], capture_output=True)


def build(target: str) -> float:
    t0 = time.monotonic()
    r = subprocess.run(
        [
            *("docker", "build", "-q", "-f", "compose/Dockerfile", "--target", target),
            *("-t", image_name(target), *build_args(), "."),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise SystemExit(f"build of {target} failed:\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
    return time.monotonic() - t0


def idle_rss_mib(container: Any) -> float:
    mem = container.stats(stream=False)["memory_stats"]
    stats = mem.get("stats", {})
    for key in ("rss", "total_rss", "anon"):
        if key in stats:
            return float(stats[key]) / 2**20
    return float(mem.get("usage", 0) - stats.get("inactive_file", 0)) / 2**20


def up_to_healthy(llm: str) -> float:
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "platform_cli.main", "up", "--mode", "docker", "--llm", llm],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise SystemExit(f"tunestack up failed:\n{r.stdout}{r.stderr}")
    return time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--warm", action="store_true", help="keep the build cache")
    ap.add_argument("--llm", default="llamacpp", choices=("llamacpp", "ollama"))
    ap.add_argument("--idle-s", type=float, default=20.0, help="settle time before RSS")
    a = ap.parse_args()
    os.environ.setdefault("COMPOSE_PROJECT_NAME", "tunestack-bench")
    for var in ("API", "CHROMA", "LLM", "UI"):
        os.environ.setdefault(f"TUNESTACK_{var}_PORT", str(free_port()))
    client = docker_client()
    if client is None:
        raise SystemExit("no Docker engine answers")
    stack = ComposeStack(StackSettings())

    if not a.warm:
        print("clearing our images and the build cache ...", flush=True)
        clear_build_cache(client)
    rows = []
    for target in TARGETS:
        seconds = build(target)
        size = client.images.get(image_name(target)).attrs["Size"] / 1e6
        rows.append((target, seconds, size))
        print(f"  built {target:9s} {seconds:7.1f}s {size:8.0f} MB", flush=True)
    os.environ.setdefault("CHROMA_IMAGE", image_name("chroma"))

    stack.down(volumes=True)
    fresh = up_to_healthy(a.llm)
    stack.down(volumes=False)
    again = up_to_healthy(a.llm)
    time.sleep(a.idle_s)
    rss = {c.labels["com.docker.compose.service"]: idle_rss_mib(c) for c in stack.containers()}
    stack.down(volumes=True)

    print(f"\nimages ({'warm' if a.warm else 'cold'} build cache, CI order)")
    print(f"{'image':10s} {'build s':>9s} {'size MB':>9s}")
    for target, seconds, size in rows:
        print(f"{target:10s} {seconds:9.1f} {size:9.0f}")
    print(f"{'total':10s} {sum(r[1] for r in rows):9.1f}")
    print(f"\nup -> all healthy ({a.llm}): {fresh:.1f}s with fresh volumes, {again:.1f}s with kept")
    print(f"\nidle RSS after {a.idle_s:.0f}s (MiB)")
    for name, mib in sorted(rss.items()):
        print(f"  {name:10s} {mib:8.1f}")
    print(f"  {'total':10s} {sum(rss.values()):8.1f}")


if __name__ == "__main__":
    main()
