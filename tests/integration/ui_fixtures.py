"""Data the UI tests need in the session stack: a collection built for two embedders, a
tuned embedder, an LLM run with a loss curve and exports, and a QA dataset.

All of it is what the real commands write, made once per test session:

- the QA dataset (ui-qa.json under TUNESTACK_HOME/datasets) is synthesized from the sample
  corpus by the tuner's own offline query synthesis; a fifth of the queries are held out;
- the tuned embedder is a real `tunestack embed tune --pairs ui-qa.json --val <held out>`
  run (one epoch at the smallest settings: seconds on two cores), so its weights, record,
  trainer_log.jsonl, training_loss.png and validation metrics are the tuner's;
- the LLM run is the converter tests' session run (`exported`, converter_fixtures.py): a
  LoRA adapter with the trainer's trainer_log.jsonl, loss plots and *_results.json,
  exported by `tunestack llm export` as f16, q8_0, q4_k_m and q5_k_m with the real parity
  and stop gates, a Modelfile and a GGUF LoRA. The tests read the figures they check from
  the registry's typed records (LlmRecord, EmbedderRecord), never from constants here.

Only `fill_synthetic` below invents data: bulk chunks with random vectors for the
page-speed tests, where embedding 10k chunks would measure the embedder, not the pages.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest

from services.common.registry import Registry
from tests.conftest import SAMPLES, free_port
from tests.integration.converter_fixtures import RUN

if TYPE_CHECKING:  # conftest imports this module: no import cycle at run time
    from tests.integration.conftest import Stack

UI_COLLECTION = "ui"
TUNED = "ui-tuned"
LLM_RUN = RUN  # the converter tests' exported run
DATASET = "ui-qa.json"


@dataclass
class UiData:
    collection: str
    tuned: str
    llm_run: str
    dataset: str


def ingest(api: str, collection: str, paths: list[Path]) -> dict:
    files = [("files", (p.name, p.read_bytes())) for p in paths]
    r = httpx.post(f"{api}/v1/ingest", data={"collection": collection}, files=files, timeout=600)
    assert r.status_code == 200, r.text
    return dict(r.json())


def wait_job(api: str, job: dict, timeout: float = 300, headers: dict | None = None) -> dict:
    deadline = time.monotonic() + timeout
    while job["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.3)
        job = httpx.get(f"{api}/v1/jobs/{job['id']}", headers=headers, timeout=10).json()
    return job


def write_dataset(home: Path, name: str, val: Path) -> None:
    """ui-qa.json (the training queries, listed as a dataset) and `val` (the held-out
    ones), synthesized offline from the sample corpus as `embed tune --docs` would."""
    from services.embed_tuner.synth import synthesize

    corpus = {
        f"c{i}": p.read_text(errors="ignore")[:1200]
        for i, p in enumerate(sorted((SAMPLES / "corpus").glob("*.md")))
    }
    train, held_out = synthesize(corpus, per_chunk=2, val_fraction=0.2)
    (home / "datasets").mkdir(parents=True, exist_ok=True)
    train.save(home / "datasets" / name)
    held_out.save(val)


def tune_embedder(stack: Stack, name: str, pairs: Path, val: Path) -> None:
    """`tunestack embed tune` at its smallest: one epoch of batches of 8 (two steps on the
    14 training queries), 64-token sequences."""
    p = stack.cli(
        "embed",
        "tune",
        "--pairs",
        str(pairs),
        "--val",
        str(val),
        "--name",
        name,
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--max-seq-length",
        "64",
        "--json",
        env={"COLUMNS": "400"},
        timeout=600,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]


@pytest.fixture(scope="session")
def ui_data(
    stack: Stack, exported: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> UiData:
    """Collection 'ui' built for the base and the tuned embedder, the tuned embedder and
    the exported LLM run (both registered by the real commands), and the QA dataset."""
    ingest(stack.api, UI_COLLECTION, sorted((SAMPLES / "corpus").glob("*.md")))
    val = tmp_path_factory.mktemp("ui-data") / "ui-qa-val.json"
    write_dataset(stack.home, DATASET, val)
    tune_embedder(stack, TUNED, stack.home / "datasets" / DATASET, val)
    r = httpx.post(
        f"{stack.api}/v1/jobs/reindex",
        json={"collection": UI_COLLECTION, "embedder": TUNED},
        timeout=30,
    )
    assert r.status_code == 202, r.text
    job = wait_job(stack.api, r.json())
    assert job["status"] == "done", job
    return UiData(UI_COLLECTION, TUNED, LLM_RUN, DATASET)


@dataclass
class DegradedApi:
    url: str
    key: str


@pytest.fixture(scope="session")
def degraded_api(stack: Stack) -> Iterator[DegradedApi]:
    """A second API process with a key and with Chroma and the LLM pointing at dead ports."""
    from tests.integration.conftest import start_api, stop_api

    port = free_port()
    key = "ui-test-key-" + "k" * 16  # the API refuses environment keys under 16 characters
    proc = start_api(
        stack,
        port,
        TUNESTACK_API_KEY=key,
        TUNESTACK_CHROMA_URL=f"http://127.0.0.1:{free_port()}",
        TUNESTACK_RAG_LLM_BASE_URL=f"http://127.0.0.1:{free_port()}/v1",
    )
    try:
        yield DegradedApi(f"http://127.0.0.1:{port}", key)
    finally:
        stop_api(proc)


@pytest.fixture(scope="session")
def ui_server(stack: Stack, ui_data: UiData) -> Iterator[str]:
    """`python -m services.ui` (the real entrypoint) on a free port, against the stack."""
    import os

    port = free_port()
    env = {
        **os.environ,
        "TUNESTACK_API_URL": stack.api,
        "TUNESTACK_UI_PORT": str(port),
        "TUNESTACK_UI_HOST": "127.0.0.1",
    }
    env.pop("TUNESTACK_API_KEY", None)
    env.pop("TUNESTACK_UI_API_URL", None)  # deprecated: would only add a warning
    log = (stack.home / "ui.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.ui"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/_stcore/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"UI did not start: {(stack.home / 'ui.log').read_text()}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def fill_synthetic(chroma_url: str, reg: Registry, name: str, n: int) -> None:
    """A collection of n chunks for the base embedder, upserted directly (as bench/retrieve.py
    does): sample-corpus texts repeated, random unit vectors, BM25 tokens. Embedding 10k
    chunks would take minutes and measure the embedder, not the pages."""
    from services.rag_api.bm25 import tokenize
    from services.rag_api.store_chroma import ChromaStore

    emb = reg.ensure("embedder", "all-minilm-l6-v2")
    store = ChromaStore(chroma_url)
    if any(b.name == name for b in store.builds(name)):
        return
    paras = [
        p.strip()
        for f in sorted((SAMPLES / "corpus").glob("*.md"))
        for p in f.read_text(errors="ignore").split("\n\n")
        if len(p.strip()) > 80
    ]
    toks = [" ".join(tokenize(p)) for p in paras]
    build = store.create(name, emb.name, emb.fingerprint, 384)
    rng = np.random.default_rng(0)
    step = 2500
    for start in range(0, n, step):
        idx = range(start, min(n, start + step))
        vecs = rng.normal(size=(len(idx), 384)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        store.upsert(
            build,
            ids=[f"s{i:07d}" for i in idx],
            embeddings=vecs,
            documents=[paras[i % len(paras)] for i in idx],
            metadatas=[
                {
                    "source": f"/synthetic/doc{i // 10}.md",
                    "file_name": f"doc{i // 10}.md",
                    "chunk_index": i % 10,
                    "n_chunks": 10,
                    "content_hash": "synthetic",
                    "embedder": emb.name,
                    "embedder_fp": emb.fingerprint,
                    "bm25": toks[i % len(paras)],
                }
                for i in idx
            ],
        )
    store.touch(build)
