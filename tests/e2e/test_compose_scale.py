"""The compose scale profile under load, with an API replica and a worker killed
(`make test-compose`; marked `docker`).

bench/scale_out_compose.py brings compose/compose.scale.yml up (2 API replicas behind
Debian's haproxy, Redis, 2 workers, milvus-lite's server, llama.cpp, one shared registry
volume), runs bench/load.py's mix through the balancer, queues reindex jobs so that both
workers are busy, then `docker kill`s api-1 and worker-1. The claims checked:
- no job is lost: every job ends done, and the job the killed worker held ran again;
- the load's errors are at most the requests haproxy had in flight on api-1 at the kill,
  plus 0.5% of all requests: one of two runs here had one 503 on an ingest that was not
  api-1's (milvus-lite's server answering an error under the load), the other had none.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]


def test_killed_replica_and_worker_lose_no_job(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    cmd = [sys.executable, str(ROOT / "bench" / "scale_out_compose.py")]
    cmd += ["--users", "8", "--seconds", "45", "--jobs", "4", "--json", str(out)]
    r = subprocess.run(cmd, cwd=ROOT / "bench", capture_output=True, text=True, timeout=1800)
    print(r.stdout[-3000:])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["jobs_running_at_kill"] >= 2  # worker-1 held a job when it was killed
    assert [j["status"] for j in res["jobs"]] == ["done"] * 4
    assert any(j["attempts"] >= 2 for j in res["jobs"])  # ... and it ran again elsewhere
    assert res["requests"] > 200
    assert res["errors"] <= res["in_flight_api1_at_kill"] + 0.005 * res["requests"], res
