"""Retrieval evaluation: ours (batched exact search) vs the LlamaIndex tutorial loop.

The LlamaIndex embedding fine-tuning tutorial evaluates by building a VectorStoreIndex
over the corpus and calling `index.as_retriever(similarity_top_k=k).retrieve(q)` once per
query. We encode all queries in one call and rank with one matrix product. Same data
(XQuAD-en: 240 paragraphs, 1190 human questions; --repeat N replicates the questions),
same embedder, fp32 on both sides so the MRR must be identical; ours also at `auto`
precision (bf16 autocast where the CPU has native bf16, else fp32) and with the int8 ONNX
encoder (`embed quantize`).

    .venv/bin/python bench/embed_eval.py [--repeat 1] [--runs 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _harness import SHARED, cpu_flags, median, peak_rss_mb


def ours(ds, path: str, precision: str, emb=None) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    from sentence_transformers import SentenceTransformer

    from services.common.embedders import SentenceTransformerEmbedder
    from services.common.ir_eval import evaluate

    emb = emb or SentenceTransformerEmbedder(
        "bench", "x", SentenceTransformer(path, device="cpu"), precision=precision
    )
    t = time.perf_counter()
    m = evaluate(ds, emb, top_k=10)
    total = time.perf_counter() - t
    return total, m["mrr@10"], m["query_encode_seconds"] + m["search_seconds"]


def llamaindex(ds, path: str) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    from llama_index.core import VectorStoreIndex
    from llama_index.core.schema import TextNode
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    embed = HuggingFaceEmbedding(model_name=path, device="cpu")
    t = time.perf_counter()
    nodes = [TextNode(id_=cid, text=text) for cid, text in ds.corpus.items()]
    index = VectorStoreIndex(nodes, embed_model=embed, show_progress=False)
    retriever = index.as_retriever(similarity_top_k=10)
    t_q = time.perf_counter()
    mrr = 0.0
    for qid, q in ds.queries.items():  # the tutorial's evaluate(): one query at a time
        ids = [n.node.node_id for n in retriever.retrieve(q)]
        rel = set(ds.relevant_docs[qid])
        mrr += next((1 / (i + 1) for i, x in enumerate(ids) if x in rel), 0.0)
    end = time.perf_counter()
    return end - t, mrr / len(ds.queries), end - t_q


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    from services.common.embedders import EmbedderPool
    from services.common.qa import QADataset, load_qa
    from services.common.registry import Registry
    from services.embed_tuner.quantize import quantize_embedder

    ds = load_qa(SHARED / "xquad" / "xquad.en.json")
    if a.repeat > 1:
        q = {f"{k}#{r}": v for r in range(a.repeat) for k, v in ds.queries.items()}
        rel = {f"{k}#{r}": v for r in range(a.repeat) for k, v in ds.relevant_docs.items()}
        ds = QADataset(q, ds.corpus, rel)
    reg = Registry(Path(tempfile.mkdtemp()))
    path = str(reg.ensure("embedder", "all-minilm-l6-v2").model_path)
    quantize_embedder(reg, "all-minilm-l6-v2")
    int8 = EmbedderPool(reg).get("all-minilm-l6-v2-int8")
    rows: dict[str, list[tuple[float, float, float]]] = {
        "ours fp32": [],
        "ours auto": [],
        "ours int8": [],
        "llamaindex": [],
    }
    for r in range(a.runs):
        rows["ours fp32"].append(ours(ds, path, "fp32"))
        rows["ours auto"].append(ours(ds, path, "auto"))
        rows["ours int8"].append(ours(ds, path, "fp32", int8))
        rows["llamaindex"].append(llamaindex(ds, path))
        print(
            f"run {r + 1}: " + ", ".join(f"{k} {v[-1][0]:.1f}s" for k, v in rows.items()),
            file=sys.stderr,
        )
    print(
        f"\nEvaluation on XQuAD-en: {len(ds.queries)} queries x {len(ds.corpus)} passages, "
        f"median of {a.runs} runs (total = corpus + queries + ranking)"
    )
    print(f"{'method':12s} {'total s':>8s} {'query phase s':>14s} {'MRR@10':>8s}")
    med = {
        k: (median([x[0] for x in v]), median([x[2] for x in v]), v[0][1]) for k, v in rows.items()
    }
    for k, (tot, qp, mrr) in med.items():
        print(f"{k:12s} {tot:8.2f} {qp:14.3f} {mrr:8.4f}")
    li = med["llamaindex"]
    for k in ("ours fp32", "ours auto", "ours int8"):
        print(
            f"{k} vs LlamaIndex loop: total {li[0] / med[k][0]:.1f}x faster "
            f"(target >= 10x), MRR difference {abs(med[k][2] - li[2]):.2e}"
        )
    print(f"peak RSS of this process: {peak_rss_mb():.0f} MB; CPU flags: {cpu_flags()}")


if __name__ == "__main__":
    main()
