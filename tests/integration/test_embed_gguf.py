"""An embedder as GGUF (issue 15, part 4): `embed export --gguf` converts with llama.cpp's
own converter and passes the parity gate (llama.cpp's vectors vs sentence-transformers',
cosine >= 0.99 on 200 texts); a file whose pooling differs fails the same gate and deploy
refuses it; `embed deploy --to ollama` creates the model on the strict fake of Ollama's
API (whose /api/embed runs the GGUF with llama.cpp), checks Ollama's vectors and registers
an embedder that retrieval can use; `--to llamacpp` does the same on the local stack's
real llama.cpp embedding server, which `up` restarts and a failed deploy rolls back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from platform_cli.stack import UpOptions
from platform_cli.stack.embed_server import LlamaCppEmbedTarget
from platform_cli.stack.embed_server import served as served_embedders
from services.common.embedders import EmbedderPool
from services.common.errors import ServiceUnavailable
from services.common.hashing import file_sha256
from services.common.records import EmbedderExport, FileRef
from services.common.registry import BASE_MODELS
from services.converter.convert import run_converter
from services.converter.embedder_gguf import parity, parity_texts
from services.converter.toolchain import scripts_dir
from tests.conftest import free_port
from tests.fake_ollama import FakeOllama
from tests.integration.conftest import Stack

BASE = "all-minilm-l6-v2"


@pytest.fixture(scope="module")
def gate(stack: Stack) -> dict[str, Any]:
    """`embed export --gguf` of the bundled MiniLM, passing the parity gate."""
    r = stack.cli("embed", "export", BASE, "--gguf")
    assert r.returncode == 0, r.stdout + r.stderr
    meta = json.loads((stack.home / f"models/embedders/{BASE}/meta.json").read_text())
    g: dict[str, Any] = meta["gguf"]["parity"]
    assert meta["gguf"]["ok"] and g["min_cosine"] >= 0.99 and g["texts"] == 200
    assert Path(meta["gguf"]["file"]["path"]).read_bytes()[:4] == b"GGUF"
    return g


def agree(stack: Stack, served: str) -> float:
    texts = ["How long is the warranty?", "Press the power button for ten seconds."]
    got = EmbedderPool(stack.registry).get(served).encode(texts)
    want = EmbedderPool(stack.registry).get(BASE).encode(texts)
    return float(np.min(np.sum(got * want, axis=1)))


def test_deploy_to_ollama(stack: Stack, gate: dict[str, Any], tmp_path: Path) -> None:
    fake = FakeOllama(tmp_path / "ollama", render=lambda t, m: "")
    env = {"OLLAMA_HOST": fake.start(free_port())}
    try:
        r = stack.cli("embed", "deploy", BASE, "--to", "ollama", "--model", "minilm", env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert fake.models["minilm:latest"]["parameters"]["num_ctx"] == gate["window"]
        rec = json.loads((stack.home / f"models/embedders/{BASE}-ollama/meta.json").read_text())
        assert rec["provider"] == "ollama" and rec["remote"]["model"] == "minilm"
        assert agree(stack, f"{BASE}-ollama") >= 0.99
    finally:
        fake.stop()


def test_deploy_to_llamacpp_serves_restarts_and_rolls_back(
    stack: Stack, gate: dict[str, Any], tmp_path: Path
) -> None:
    """The local stack's llama.cpp embedding server: registered, used by an ingest and a
    retrieval through the API, started again by `up`, and a model it cannot load rolled
    back to the previous server."""
    served = f"{BASE}-llamacpp"
    r = stack.cli("embed", "deploy", BASE, "--to", "llamacpp", "--model", "minilm")
    assert r.returncode == 0, r.stdout + r.stderr
    rec = json.loads((stack.home / f"models/embedders/{served}/meta.json").read_text())
    url = f"http://127.0.0.1:{stack.settings.embed_server_port}/v1"
    assert rec["provider"] == "openai-compatible" and rec["remote"]["base_url"] == url
    assert agree(stack, served) >= 0.99
    files = [("files", ("w.md", b"# Warranty\n\nThe Lumen Q1 warranty lasts two years.\n"))]
    form = {"collection": "gguf-served", "embedder": served}
    r2 = httpx.post(f"{stack.api}/v1/ingest", data=form, files=files, timeout=120)
    assert r2.status_code == 200, r2.text
    body = {"collection": "gguf-served", "query": "How long is the warranty?", "top_k": 1}
    hits = httpx.post(f"{stack.api}/v1/retrieve", json=body, timeout=60).json()
    assert hits["embedder"] == served and "two years" in hits["hits"][0]["text"], hits

    # stopped (a reboot): `up` starts it again from run/embed-served.json
    assert stack.local.stop("embed")
    row = next(x for x in stack.local.status() if x.name == "embed")
    assert row.state == "stopped"
    stack.local.up(UpOptions(ui=False), lambda m: None)
    assert next(x for x in stack.local.status() if x.name == "embed").healthy
    assert agree(stack, served) >= 0.99

    # a file llama.cpp cannot load: the previous server comes back, the list is unchanged
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + bytes(4096))
    with pytest.raises(ServiceUnavailable) as e:
        LlamaCppEmbedTarget(stack.local).install(broken, "-", "broken", 256, lambda m: None)
    assert "the previous embedding server was restored" in e.value.message
    assert [x.alias for x in served_embedders(stack.local.run_dir)] == ["minilm"]
    assert agree(stack, served) >= 0.99


def test_failed_gate_is_refused(stack: Stack, gate: dict[str, Any], tmp_path: Path) -> None:
    """A real GGUF whose pooling (CLS) differs from the model's (mean) fails the gate, and
    deploy refuses a file marked so."""
    src = BASE_MODELS[BASE].locate()
    assert src is not None
    cls = tmp_path / "minilm-cls"
    shutil.copytree(src, cls)
    pool_cfg = cls / "1_Pooling" / "config.json"
    cfg = json.loads(pool_cfg.read_text())
    cfg.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    pool_cfg.write_text(json.dumps(cfg))
    bad = tmp_path / "cls.gguf"
    run_converter(scripts_dir(), [str(cls), "--outfile", str(bad), "--outtype", "f16"])
    from sentence_transformers import SentenceTransformer

    failed = parity(SentenceTransformer(str(src), device="cpu"), bad, parity_texts())
    assert not failed.ok and failed.min_cosine < 0.99

    def record_failed(rec):  # type: ignore[no-untyped-def]
        rec.gguf = EmbedderExport(
            file=FileRef(path=str(bad), file=bad.name, sha256=file_sha256(bad)),
            outtype="f16",
            parity=failed,
            ok=False,
        )
        return rec

    stack.registry.update("embedder", BASE, record_failed)
    fake = FakeOllama(tmp_path / "ollama", render=lambda t, m: "")
    env = {"OLLAMA_HOST": fake.start(free_port())}
    try:
        for to in ("ollama", "llamacpp"):
            r = stack.cli("embed", "deploy", BASE, "--to", to, "--model", "bad", env=env)
            out = " ".join((r.stdout + r.stderr).split())
            assert r.returncode != 0 and "failed its parity gate" in out, out
        assert "bad:latest" not in fake.models
        assert "bad" not in [x.alias for x in served_embedders(stack.local.run_dir)]
    finally:
        fake.stop()
