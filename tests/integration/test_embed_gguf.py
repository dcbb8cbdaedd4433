"""An embedder as GGUF (issue 15, part 4): `embed export --gguf` converts with llama.cpp's
own converter and passes the parity gate (llama.cpp's vectors vs sentence-transformers',
cosine >= 0.99 on 200 texts); a file whose pooling differs fails the same gate and deploy
refuses it; `embed deploy --to ollama` creates the model on the strict fake of Ollama's
API (whose /api/embed runs the GGUF with llama.cpp), checks Ollama's vectors and registers
an embedder that retrieval can use."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from services.common.embedders import EmbedderPool
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


def test_export_parity_deploy_and_refusal(stack: Stack, tmp_path: Path) -> None:
    r = stack.cli("embed", "export", BASE, "--gguf")
    assert r.returncode == 0, r.stdout + r.stderr
    meta = json.loads((stack.home / f"models/embedders/{BASE}/meta.json").read_text())
    gate = meta["gguf"]["parity"]
    assert meta["gguf"]["ok"] and gate["min_cosine"] >= 0.99 and gate["texts"] == 200
    gguf = Path(meta["gguf"]["file"]["path"])
    assert gguf.read_bytes()[:4] == b"GGUF"

    fake = FakeOllama(tmp_path / "ollama", render=lambda t, m: "")
    url = fake.start(free_port())
    env = {"OLLAMA_HOST": url}
    try:
        r = stack.cli("embed", "deploy", BASE, "--to", "ollama", "--model", "minilm", env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert fake.models["minilm:latest"]["parameters"]["num_ctx"] == gate["window"]
        rec = json.loads((stack.home / f"models/embedders/{BASE}-ollama/meta.json").read_text())
        assert rec["provider"] == "ollama" and rec["remote"]["model"] == "minilm"
        texts = ["How long is the warranty?", "Press the power button for ten seconds."]
        served = EmbedderPool(stack.registry).get(f"{BASE}-ollama").encode(texts)
        local = EmbedderPool(stack.registry).get(BASE).encode(texts)
        assert np.min(np.sum(served * local, axis=1)) >= 0.99

        # a real GGUF whose pooling (CLS) differs from the model's (mean): the gate fails
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
        r = stack.cli("embed", "deploy", BASE, "--to", "ollama", "--model", "bad", env=env)
        out = " ".join((r.stdout + r.stderr).split())
        assert r.returncode != 0 and "failed its parity gate" in out, out
        assert "bad:latest" not in fake.models
    finally:
        fake.stop()
