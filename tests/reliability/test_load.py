"""Load: bench/load.py's 32 users mixing retrieve, RAG chat (8 new tokens), embeddings and
small ingests for 60 s against the local stack, through an API of its own whose per-key
limits are raised (a 429 counts as an error). No request may fail."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from tests.conftest import ROOT
from tests.integration.conftest import Stack
from tests.reliability.conftest import ADMIN_KEY, HIGH_LIMITS, api_process

USERS = 32
SECONDS = 60


def bench_load() -> ModuleType:
    """bench/load.py (bench/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("bench_load", ROOT / "bench" / "load.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_load_mixed_users(
    stack: Stack, tmp_path: Path, figures: Callable[[str, Any], None]
) -> None:
    load = bench_load()
    env = {**HIGH_LIMITS, "TUNESTACK_RAG_LLM_TIMEOUT_S": str(load.CHAT_TIMEOUT_S)}
    with api_process(stack, tmp_path / "home", **env) as api:
        result = asyncio.run(
            load.run_load(api.url, ADMIN_KEY, USERS, SECONDS, "rel-load", pid=api.proc.pid)
        )
        log = api.log_text()
    summary = result.summary()
    figures("load", summary)
    figures("load-table", result.table())
    assert result.errors == 0, result.table()
    assert all(r["requests"] > 0 for r in summary["ops"].values()), result.table()
    assert "unhandled error" not in log
