"""The same stack driven through the compose v2 plugin (`docker compose`) instead of v1.

test_compose_stack.py runs everything with whichever compose the machine has (v1
`docker-compose` in CI). This module points the docker CLI at the v2 plugin that
infra/ci/compose_e2e.sh unpacks into .cache/docker-v2 (DOCKER_CONFIG) and checks that the
CLI picks it and that up, status, a job, logs and down --volumes work with it too. It
reuses the images the first module built.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from platform_cli.settings import StackSettings
from platform_cli.stack.compose import ComposeStack, docker_client
from platform_cli.stack.compose_cli import detect_compose

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_CONFIG = ROOT / ".cache" / "docker-v2"


def v2_env() -> dict[str, str]:
    env = dict(os.environ)
    if (PLUGIN_CONFIG / "cli-plugins" / "docker-compose").exists():
        env["DOCKER_CONFIG"] = str(PLUGIN_CONFIG)
    return env


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "platform_cli.main", *args],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
        env=v2_env(),
    )
    print(f"  [v2] tunestack {' '.join(args)}: exit {r.returncode} in {time.monotonic() - t0:.1f}s")
    return r


def test_the_stack_works_through_compose_v2(monkeypatch: pytest.MonkeyPatch) -> None:
    if docker_client() is None:
        pytest.skip("no Docker engine answers (make test-compose starts one)")
    for key, value in v2_env().items():
        monkeypatch.setenv(key, value)
    compose = detect_compose()
    if not compose.is_v2:
        pytest.skip("the compose v2 plugin is not installed (make test-compose installs it)")
    s = StackSettings()
    stack = ComposeStack(s, compose)
    try:
        r = cli("up", "--mode", "docker", "--llm", "llamacpp")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "docker compose (v2 plugin)" in r.stdout
        rows = {row["service"]: row["state"] for row in json.loads(cli("status", "--json").stdout)}
        assert rows == dict.fromkeys(("chroma", "llm", "rag-api", "ui"), "healthy")
        r = cli("ingest", "samples/corpus/product_catalog.md", "-c", "v2job", "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        assert json.loads(r.stdout)["chunks_written"] > 0
        names = httpx.get(s.api_url + "/v1/collections", timeout=60).json()["collections"]
        assert "v2job" in {c["name"] for c in names}
        r = cli("logs", "llm", "-n", "5")
        assert r.returncode == 0 and "llamacpp" in r.stdout + r.stderr
    finally:
        r = cli("down", "--volumes")
    assert r.returncode == 0, r.stderr
    assert not stack.containers(include_jobs=True)
