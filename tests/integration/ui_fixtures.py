"""Data the UI tests need in the session stack: a collection built for two embedders, a
registered "tuned" embedder, an LLM run with a loss curve and exports, and a QA dataset.

Real tuning takes minutes on two busy cores and the UI only reads what the registry
records, so the tuned embedder is the base model with slightly perturbed weights,
registered with the typed record `tunestack embed tune` writes (EmbedderRecord); its
rankings differ from the base's, which is what the Compare page shows. The LLM run is laid
out the way the trainer writes one (adapter/ with trainer_log.jsonl, training_loss.png
from the trainer's own plot code, all_results.json) and registered with the records the
trainer and the converter write (LlmRecord with an ExportRun), to check they are shown.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
import pytest

from services.common.hashing import dir_fingerprint, file_sha256
from services.common.records import EmbedderRecord, ExportFile, ExportRun, LlmRecord
from services.common.registry import Registry, dump
from tests.conftest import SAMPLES, free_port

if TYPE_CHECKING:  # conftest imports this module: no import cycle at run time
    from tests.integration.conftest import Stack

UI_COLLECTION = "ui"
TUNED = "ui-tuned"
LLM_RUN = "ui-lora"
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


def register_tuned_embedder(reg: Registry, name: str) -> None:
    from safetensors.numpy import load_file, save_file

    from services.embed_tuner.plots import loss_curve

    base = reg.ensure("embedder", "all-minilm-l6-v2")
    d = reg.entry_dir("embedder", name)
    if (d / "meta.json").is_file():
        return
    tmp = d.with_name(f".tmp-{name}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(base.model_path, tmp / "model", ignore=shutil.ignore_patterns("README.md"))
    weights = tmp / "model" / "model.safetensors"
    tensors = load_file(str(weights))
    rng = np.random.default_rng(0)
    for k, v in tensors.items():
        if v.dtype.kind == "f" and v.ndim == 2:
            tensors[k] = (v + rng.normal(0, 0.02 * float(v.std()), v.shape)).astype(v.dtype)
    save_file(tensors, str(weights), metadata={"format": "pt"})
    history = [{"step": s, "loss": 1.2 / s, "epoch": s / 8} for s in range(1, 9)]
    history += [{"step": 8, "eval_val_cosine_mrr@10": 0.81}]
    (tmp / "trainer_log.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    loss_curve(history, tmp / "training_loss.png", title=f"{name} (from {base.name})")
    record = EmbedderRecord(
        name=name,
        base_model=base.name,
        base_fingerprint=base.fingerprint,
        model_path=str(d / "model"),
        fingerprint=dir_fingerprint(tmp / "model")[:16],
        source="tunestack embed tune",
        data={"kind": "pair", "rows": 64, "hash": "test", "validation_queries": 8},
        parameters={"base": base.name, "name": name, "epochs": 1.0, "loss": "mnrl"},
        metrics={"validation": {"cosine_mrr@10": 0.81}, "train_seconds": 1.0},
    )
    (tmp / "meta.json").write_text(json.dumps(dump(record), indent=2))
    tmp.rename(d)


def register_llm_run(reg: Registry, name: str) -> None:
    from services.trainer.plots import plot_loss

    d = reg.entry_dir("llm", name)
    adapter = d / "adapter"
    adapter.mkdir(parents=True, exist_ok=True)
    history = [{"step": s, "loss": 2.5 - 0.1 * s, "epoch": s / 10} for s in range(1, 11)]
    history += [{"step": 10, "eval_loss": 1.9}]
    (adapter / "trainer_log.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    plot_loss(adapter, history, ("loss", "eval_loss"))
    results = {"train_loss": 2.0, "eval_loss": 1.9, "epoch": 1.0}
    (adapter / "all_results.json").write_text(json.dumps(results))
    (adapter / "adapter_config.json").write_text("{}")  # present in real runs, never served
    gguf = d / "gguf" / f"{name}.q8_0.gguf"
    gguf.parent.mkdir(exist_ok=True)
    gguf.write_bytes(b"GGUF" + b"\0" * 4092)
    q8 = ExportFile(
        quant="q8_0",
        path=str(gguf),
        file=gguf.name,
        size=gguf.stat().st_size,
        sha256=file_sha256(gguf),
        parity={"top1_agreement": 0.97, "threshold": 0.9, "ok": True, "tokenizer_match": "6/6"},
        stop_check={"stopped": 6, "prompts": 6, "rate": 1.0, "ok": True},
        ok=True,
    )
    record = LlmRecord(
        name=name,
        base_model="smollm2-135m-instruct",
        source="tunestack llm train",
        stage="sft",
        finetuning_type="lora",
        model_path=str(adapter),
        adapter_path=str(adapter),
        output_dir=str(adapter),
        parameters={"learning_rate": 2e-4, "num_train_epochs": 1, "lora_rank": 8},
        metrics={
            "train": {"train_loss": 2.0, "train_runtime": 30.5},
            "eval": {"eval_loss": 1.9},
            "predict": {"lumen_sft_val": {"bleu-4": 12.5, "rouge-l": 30.1}},
        },
        export=ExportRun(quants=["q8_0"], files={"q8_0": q8}, ok=True),
    )
    reg.write(record, replace=True)


def write_dataset(home: Path, name: str) -> None:
    from services.embed_tuner.synth import synthesize

    corpus = {
        f"c{i}": p.read_text(errors="ignore")[:1200]
        for i, p in enumerate(sorted((SAMPLES / "corpus").glob("*.md")))
    }
    train, _ = synthesize(corpus, per_chunk=2, val_fraction=0.0)
    (home / "datasets").mkdir(parents=True, exist_ok=True)
    train.save(home / "datasets" / name)


@pytest.fixture(scope="session")
def ui_data(stack: Stack) -> UiData:
    """Collection 'ui' built for the base and the tuned embedder, plus registry entries."""
    ingest(stack.api, UI_COLLECTION, sorted((SAMPLES / "corpus").glob("*.md")))
    reg = stack.registry
    register_tuned_embedder(reg, TUNED)
    register_llm_run(reg, LLM_RUN)
    write_dataset(stack.home, DATASET)
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
    from tests.integration.conftest import start_api

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
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


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
    from services.rag_api.store import VectorStore

    emb = reg.ensure("embedder", "all-minilm-l6-v2")
    store = VectorStore(chroma_url)
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
    col = store.collection(build)
    rng = np.random.default_rng(0)
    step = 2500
    for start in range(0, n, step):
        idx = range(start, min(n, start + step))
        vecs = rng.normal(size=(len(idx), 384)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        col.upsert(
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
