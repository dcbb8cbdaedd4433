"""Real components for integration tests: a Chroma server, the llama.cpp server with
the bundled model and the RAG API under uvicorn, started exactly as `tunestack up` does
(LocalStack), on free ports, in a temp TUNESTACK_HOME."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from platform_cli.settings import StackSettings
from platform_cli.stack import UpOptions
from platform_cli.stack.local import LocalStack
from services.common.embedders import Embedder, EmbedderPool
from services.common.registry import Registry
from services.rag_api.store import VectorStore
from services.rag_api.store_chroma import ChromaStore
from tests.conftest import free_port


@dataclass
class Stack:
    settings: StackSettings
    local: LocalStack
    home: Path

    @property
    def api(self) -> str:
        return self.settings.api_url

    @property
    def registry(self) -> Registry:
        return Registry(self.home)

    def env(self) -> dict[str, str]:
        """Environment for a `tunestack` CLI subprocess that targets this stack."""
        s = self.settings
        return {
            **os.environ,
            "TUNESTACK_HOME": str(self.home),
            "TUNESTACK_API_PORT": str(s.api_port),
            "TUNESTACK_CHROMA_PORT": str(s.chroma_port),
            "TUNESTACK_LLM_PORT": str(s.llm_port),
            "TUNESTACK_UI_PORT": str(s.ui_port),
            "TUNESTACK_EMBED_SERVER_PORT": str(s.embed_server_port),
            "TUNESTACK_MILVUS_PORT": str(s.milvus_port),
        }

    def cli(
        self, *args: str, timeout: float = 600, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`tunestack ARGS...` as a subprocess against this stack (`env` added to its
        environment), output captured."""
        return subprocess.run(
            [sys.executable, "-m", "platform_cli.main", *args],
            env={**self.env(), **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("tunestack-home")
    s = StackSettings(
        home=home,
        api_port=free_port(),
        chroma_port=free_port(),
        llm_port=free_port(),
        ui_port=free_port(),
        embed_server_port=free_port(),
        milvus_port=free_port(),
    )
    local = LocalStack(s)
    try:
        local.up(UpOptions(ui=False), lambda m: None)
        yield Stack(s, local, s.home_dir)
    finally:
        local.down()


@pytest.fixture(scope="session")
def milvus_store(stack: Stack) -> VectorStore:
    """Milvus (milvus-lite's gRPC server) started as local mode starts it for
    TUNESTACK_VECTOR_STORE=milvus; the stack's `down` stops it."""
    from platform_cli.stack.local import MILVUS
    from services.rag_api.store_milvus import MilvusStore

    spec = stack.local.spec(MILVUS)
    stack.local.start(spec)
    stack.local.wait_healthy(spec, 60)
    return MilvusStore(stack.settings.milvus_uri)


@pytest.fixture(scope="session")
def store(stack: Stack, request: pytest.FixtureRequest) -> VectorStore:
    """The stack's Chroma; a test parametrized with `BOTH_STORES` runs on Milvus too."""
    if getattr(request, "param", "chroma") == "milvus":
        return request.getfixturevalue("milvus_store")  # type: ignore[no-any-return]
    return ChromaStore(stack.settings.chroma_url)


BOTH_STORES = pytest.mark.parametrize("store", ["chroma", "milvus"], indirect=True)


@pytest.fixture(scope="session")
def embedder(stack: Stack) -> Embedder:
    return EmbedderPool(stack.registry).get("all-minilm-l6-v2")


def start_api(stack: Stack, port: int, **env: str) -> subprocess.Popen[bytes]:
    """An extra API process with its own settings (auth, limits, dead peers)."""
    full = {**stack.local.child_env(), "TUNESTACK_RAG_PORT": str(port), **env}
    log = (stack.home / f"api-{port}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.rag_api"], env=full, stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(
        f"API on {port} did not start: {(stack.home / f'api-{port}.log').read_text()}"
    )


def stop_api(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process start_api started: terminate, and kill after 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def register_embedder_copy(stack: Stack, name: str) -> None:
    """Register `name`: the bundled MiniLM's weights under another fingerprint (same
    vectors), so a collection needs a reindex for it."""
    from services.common.hashing import dir_fingerprint

    reg = stack.registry
    base = reg.ensure("embedder", "all-minilm-l6-v2")
    copy = stack.home / name
    if not copy.exists():
        shutil.copytree(base.model_path, copy)
        cfg = copy / "config_sentence_transformers.json"
        cfg.write_text(cfg.read_text() + "\n")
    reg.write(
        base.record.model_copy(
            update={
                "name": name,
                "model_path": str(copy),
                "base_model": "all-minilm-l6-v2",
                "fingerprint": dir_fingerprint(copy)[:16],
            }
        ),
        replace=True,
    )


# Fixtures of other modules, shared here: the session's export of a LoRA run (the converter
# test modules); UI test data and processes (the UI, browser and admin-API test modules).
from tests.integration.converter_fixtures import exported  # noqa: E402, F401
from tests.integration.ui_fixtures import degraded_api, ui_data, ui_server  # noqa: E402, F401
