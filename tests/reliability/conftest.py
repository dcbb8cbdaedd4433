"""The reliability suite (`make test-reliability`): the real local stack of the
integration tests (its `stack` fixture, imported here), plus API processes of our own
with keys and limits set per test.

Every API process started here gets an admin key, and the per-key and per-address limits
raised where a test sends many requests on purpose (a 429 would otherwise be the answer
we measure). Collections made here are named `rel-*`: random fuzzed names do not hit
them (the fuzzer is offered only its own, `rel-fuzz`, which it may delete).
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import SAMPLES, free_port
from tests.conftest import artifacts_dir as artifacts_dir  # the fixture, re-exported
from tests.integration.conftest import Stack, start_api
from tests.integration.conftest import stack as stack  # the fixture, re-exported

ADMIN_KEY = "tsk-reliability-admin-key-0123456789"
HIGH_LIMITS = {
    "TUNESTACK_RAG_RATE_PER_MINUTE": "1000000",
    "TUNESTACK_RAG_MAX_CONCURRENT": "256",
    "TUNESTACK_RAG_FAILED_AUTH_PER_MINUTE": "1000000",
}


@dataclass
class Api:
    """An API process of our own: its URL, process, home and admin headers."""

    url: str
    proc: subprocess.Popen[bytes]
    home: Path
    log: Path

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_KEY}"}

    def client(self, timeout: float = 120) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=timeout)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@contextlib.contextmanager
def api_process(stack: Stack, home: Path | None = None, /, **env: str) -> Iterator[Api]:
    """An API on a free port against the stack's Chroma and LLM server, with the admin key;
    `home` (default: the stack's) is its TUNESTACK_HOME."""
    port = free_port()
    full = {"TUNESTACK_API_KEY": ADMIN_KEY, **env}
    if home is not None:
        home.mkdir(parents=True, exist_ok=True)
        full["TUNESTACK_HOME"] = str(home)
    proc = start_api(stack, port, **full)
    api = Api(f"http://127.0.0.1:{port}", proc, home or stack.home, stack.home / f"api-{port}.log")
    try:
        yield api
    finally:
        api.stop()


def rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of a live process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


FUZZ_COLLECTION = "rel-fuzz"
FUZZ_DATASET = "rel-fuzz.json"


@pytest.fixture(scope="session")
def fuzz_api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """The API the schema fuzzer hits: a key, high limits and a home of its own (the
    fuzzer switches the LLM and uploads files; none of that may leak into other tests),
    with a small collection and a small evaluation dataset for it to find."""
    with api_process(stack, tmp_path_factory.mktemp("fuzz-home"), **HIGH_LIMITS) as api:
        docs = ["expense_policy.md", "leave_policy.txt", "zh_support.txt"]
        files = [("files", (n, (SAMPLES / "corpus" / n).read_bytes())) for n in docs]
        dataset = {
            "queries": {"q1": "How many vacation days?", "q2": "Who approves expenses?"},
            "corpus": {"d1": "Vacation: 25 days a year.", "d2": "Managers approve expenses."},
            "relevant_docs": {"q1": ["d1"], "q2": ["d2"]},
        }
        with api.client() as c:
            r = c.post("/v1/ingest", data={"collection": FUZZ_COLLECTION}, files=files)
            assert r.status_code == 200, r.text
            r = c.post("/v1/datasets", files={"file": (FUZZ_DATASET, json.dumps(dataset))})
            assert r.status_code == 201, r.text
        yield api


@pytest.fixture(scope="session")
def figures(request: pytest.FixtureRequest, artifacts_dir: Path) -> Callable[[str, Any], None]:
    """figures(name, data): print a test's measured figures in the pytest output and keep
    them in test-artifacts/reliability/NAME.json (bench/README.md quotes them)."""
    out = artifacts_dir / "reliability"
    out.mkdir(exist_ok=True)
    terminal = request.config.pluginmanager.get_plugin("terminalreporter")

    def record(name: str, data: Any) -> None:
        text = data if isinstance(data, str) else json.dumps(data, indent=1)
        if isinstance(data, str):
            (out / f"{name}.txt").write_text(data + "\n")
        else:
            (out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
        if terminal is not None:
            terminal.write_line(f"\n[reliability] {name}:\n{text}")

    return record
