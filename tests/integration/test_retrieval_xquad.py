"""Retrieval smoke on human questions: XQuAD (en), question -> its paragraph."""

from __future__ import annotations

import json
from pathlib import Path

from services.common.embedders import EmbedderPool
from services.rag_api.ingest import Ingestor
from services.rag_api.retrieval import Retriever
from services.rag_api.store import VectorStore
from tests.conftest import shared_data
from tests.integration.conftest import Stack


def test_dense_hit_at_5_on_xquad_en(tmp_path: Path, stack: Stack, store: VectorStore) -> None:
    data = json.loads(shared_data("xquad", "xquad.en.json").read_text())
    questions: list[tuple[str, str]] = []
    for a, article in enumerate(data["data"]):
        for p, para in enumerate(article["paragraphs"]):
            name = f"a{a:02d}p{p:02d}.txt"
            (tmp_path / name).write_text(para["context"])
            questions += [(qa["question"], name) for qa in para["qas"]]
    pool = EmbedderPool(stack.registry)
    emb = pool.get("all-minilm-l6-v2")
    rep = Ingestor(store, emb, chunk_size=256, chunk_overlap=32, max_file_bytes=2**20).ingest(
        [tmp_path], "xquad-en"
    )
    assert rep.counts == {"ok": 240}

    retriever = Retriever(store, pool, "all-minilm-l6-v2")
    # dense (the headline) on every 2nd question (595), BM25 and hybrid on every 4th: an
    # even spread over all 240 paragraphs at half the time of asking all 1,190
    samples = {"dense": questions[::2], "bm25": questions[::4], "hybrid": questions[::4]}
    rates = {}
    for mode, sample in samples.items():
        found = 0
        for q, name in sample:
            res = retriever.retrieve("xquad-en", q, mode=mode, top_k=5)
            found += any(h.file_name == name for h in res.hits)
        rates[mode] = found / len(sample)
    print(f"\nXQuAD-en hit@5 (of {len(questions)}: every 2nd dense, 4th bm25/hybrid): {rates}")
    assert rates["dense"] >= 0.90
    assert rates["hybrid"] >= 0.90
    assert rates["bm25"] >= 0.75
