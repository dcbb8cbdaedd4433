"""Shared fixtures: a throwaway TUNESTACK_HOME and the offline environment."""

from __future__ import annotations

import json
import os
import socket
from collections import defaultdict
from pathlib import Path
from typing import NoReturn

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TUNESTACK_SHARED_DATA", ROOT.parent / "shared" / "data"))
SAMPLES = ROOT / "samples"


IN_CI = bool(os.environ.get("CI"))


def unavailable(reason: str) -> NoReturn:
    """A test's prerequisite is missing: skip on a developer machine, FAIL under CI.

    `.ci/run` exports CI=1 and installs every tool and data set the suite needs, so in CI
    a missing one is a broken set-up, never a reason to report green with tests skipped.
    """
    if IN_CI:
        pytest.fail(f"{reason} (CI=1: .ci/run must provide it)", pytrace=False)
    pytest.skip(reason)


def shared_data(*parts: str) -> Path:
    """A file under ../shared/data (public QA sets, never copied into this repository)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        unavailable(f"{path} is not present (../shared/data holds the public QA sets)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    d = ROOT / "test-artifacts"
    d.mkdir(exist_ok=True)
    return d


# Seconds per test file (setup + call + teardown; a session fixture counts in the file that
# first uses it), printed after every run and kept in test-artifacts/durations-per-file.json:
# CI's 90 minutes are shared by every suite, so each run shows where the time goes.
_FILE_SECONDS: defaultdict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _FILE_SECONDS[report.nodeid.split("::")[0]] += report.duration


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _FILE_SECONDS:
        return
    ranked = sorted(_FILE_SECONDS.items(), key=lambda kv: -kv[1])
    out = ROOT / "test-artifacts"
    out.mkdir(exist_ok=True)
    (out / "durations-per-file.json").write_text(
        json.dumps({f: round(s, 1) for f, s in ranked}, indent=1), encoding="utf-8"
    )
    terminalreporter.write_sep("=", f"seconds per file ({len(ranked)} files)")
    for name, seconds in ranked[:20]:
        terminalreporter.write_line(f"{seconds:8.1f}  {name}")
    terminalreporter.write_line(f"{sum(_FILE_SECONDS.values()):8.1f}  in all")
