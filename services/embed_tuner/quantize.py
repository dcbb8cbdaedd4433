"""`tunestack embed quantize NAME`: a sentence-transformers embedder as ONNX with dynamic
int8 weights (onnxruntime's quantizer, per channel), registered as a new embedder that
ingest, retrieval and evaluation use like any other.

sentence-transformers' own ONNX backend goes through `optimum`, whose current release
pins transformers below 4.58 while sentence-transformers 5+ needs transformers 5; so the
transformer is exported with torch.onnx and the pooling (mean, as the model's 1_Pooling
says) and normalization are done in numpy by the runtime embedder. Models whose modules
are not Transformer + mean Pooling (+ Normalize) are refused rather than approximated.
Per-channel weights were chosen over per-tensor by their cosine to the fp32 model on the
probe texts (services.common.embedders.probe_texts), no evaluation questions involved.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from services.common.embedders.onnx_local import MODEL_FILE, OnnxInt8Embedder
from services.common.embedders.probe_texts import parity_texts
from services.common.errors import BadInput, disk_full_names
from services.common.hashing import file_sha256
from services.common.records import EmbedderRecord
from services.common.registry import Entry, Registry, validate_name, versions

OPSET = 17


def _check_modules(folder: Path) -> int:
    """The model's window, if its pipeline is one we reproduce exactly; else BadInput."""
    mods = (
        json.loads((folder / "modules.json").read_text())
        if (folder / "modules.json").is_file()
        else []
    )
    kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in mods]
    pooling = {}
    for m in mods:
        if m.get("type", "").endswith("Pooling"):
            pooling = json.loads((folder / m["path"] / "config.json").read_text())
    mean_only = pooling.get("pooling_mode_mean_tokens") and not any(
        v
        for k, v in pooling.items()
        if k.startswith("pooling_mode") and k != "pooling_mode_mean_tokens"
    )
    if (
        kinds[:2] != ["Transformer", "Pooling"]
        or kinds[2:] not in ([], ["Normalize"])
        or not mean_only
    ):
        raise BadInput(
            f"{folder.name}: modules {kinds or 'unknown'} with pooling {pooling or 'unknown'}; "
            "only Transformer + mean Pooling (+ Normalize) is quantized.",
            hint="Quantize all-minilm-l6-v2 or an embedder tuned from it.",
        )
    cfg = folder / "sentence_bert_config.json"
    return int(json.loads(cfg.read_text()).get("max_seq_length", 256)) if cfg.is_file() else 256


def _export_onnx(st: Any, path: Path) -> None:
    import torch  # optional extra (embed)

    hf = st[0].auto_model.eval()

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hf = hf

        def forward(self, ids: Any, mask: Any, types: Any) -> Any:
            return self.hf(input_ids=ids, attention_mask=mask, token_type_ids=types)[0]

    ex = st.tokenizer(["a short text", "and another one"], padding=True, return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    with torch.no_grad():
        torch.onnx.export(
            Encoder(),
            tuple(ex[n] for n in names),
            str(path),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={n: {0: "batch", 1: "tokens"} for n in [*names, "last_hidden_state"]},
            opset_version=OPSET,
            dynamo=False,
        )


def quantize_embedder(
    registry: Registry, name: str, out: str | None = None
) -> Entry[EmbedderRecord]:
    from onnxruntime.quantization import QuantType, quantize_dynamic  # optional (train)
    from sentence_transformers import SentenceTransformer  # optional extra (embed)

    entry: Entry[EmbedderRecord] = registry.embedder(name)
    if entry.record.provider != "sentence-transformers":
        raise BadInput(
            f"'{name}' ({entry.record.provider}) is not a sentence-transformers model.",
            hint="Quantize all-minilm-l6-v2 or an embedder tuned from it.",
        )
    out = out or f"{name}-int8"
    validate_name(out)
    src = entry.model_path
    window = _check_modules(src)
    dest = registry.entry_dir("embedder", out)
    work = dest.parent / f".work-{out}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t0 = time.perf_counter()
    st = SentenceTransformer(str(src), device="cpu")
    with disk_full_names(work, registry.home):
        _export_onnx(st, work / "model.onnx")
        quantize_dynamic(
            str(work / "model.onnx"),
            str(work / MODEL_FILE),
            weight_type=QuantType.QInt8,
            per_channel=True,
            # 7-bit weights: without VNNI (AVX2 only) onnxruntime's u8 x s8 kernel adds
            # products in int16 and saturates; on such a CPU full 8-bit weights cost
            # MRR@10 0.011 on 24 XQuAD articles, 7-bit 0.0001 (and the same elsewhere)
            reduce_range=True,
        )
        (work / "model.onnx").unlink()
        shutil.copy(src / "tokenizer.json", work / "tokenizer.json")
    seconds = time.perf_counter() - t0
    fp = hashlib.sha256(
        (file_sha256(work / MODEL_FILE) + file_sha256(work / "tokenizer.json")).encode()
    ).hexdigest()[:16]
    quant = OnnxInt8Embedder(out, fp, work, window)
    texts = parity_texts(200)
    want = st.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    cos = np.sum(want * quant.encode(texts), axis=1)
    if dest.exists():
        shutil.rmtree(dest)
    work.rename(dest)
    record = EmbedderRecord(
        name=out,
        model_path=str(dest),
        base_model=name,
        source=f"embed quantize {name}",
        fingerprint=fp,
        base_fingerprint=entry.fingerprint,
        provider="onnx-int8",
        dimension=quant.dimension,
        languages=entry.record.languages,
        parameters={
            "backend": "onnx-int8",
            "per_channel": True,
            "opset": OPSET,
            "max_seq_length": window,
        },
        metrics={
            "cosine_to_source": {
                "min": round(float(cos.min()), 6),
                "median": round(float(statistics.median(cos.tolist())), 6),
                "texts": len(texts),
            },
            "quantize_seconds": round(seconds, 1),
        },
        versions=versions(),
    )
    return registry.write(record, replace=True)
