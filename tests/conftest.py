"""Shared fixtures: a throwaway TUNESTACK_HOME and the offline environment."""

from __future__ import annotations

import os
import socket
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
