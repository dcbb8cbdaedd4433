"""The relevance gate's threshold, calibrated on questions the documents do answer.

A question whose best passage is less similar to it than the threshold is answered "not
in the documents" without asking the LLM (services/rag_api/answering.py). The threshold
is a cosine similarity of one embedder over one collection, so it is stored on that
build. It is set from answerable questions alone, the kind a user has (their QA set, or
the one `llm synth --qa` trained on): the `false_abstention` quantile of each question's
best dense similarity, so that share of questions like them would be turned away and no
unanswerable question is needed. LlamaIndex's SimilarityPostprocessor and RAGFlow's
similarity threshold are the same idea with a hand-picked number.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from services.common.errors import BadInput
from services.rag_api.context import RagContext
from services.rag_api.rag_eval.datasets import load_dataset
from services.rag_api.rag_eval.gold import ChunkIndex, build_chunks

# Below this many questions the quantile is mostly noise (5% of 20 is one question).
MIN_QUESTIONS = 20
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Calibration:
    collection: str
    embedder: str
    min_relevance: float | None  # None: the gate is off for this build
    questions: int = 0  # answerable questions scored
    skipped: int = 0  # marked unanswerable, or their passage is not in the collection
    false_abstention: float | None = None  # share of those questions the gate turns away
    best_similarity: dict[str, float] | None = None  # p5 / p50 / p95 of their best passage

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def quantile(values: list[float], q: float) -> float:
    """The largest value with at most a share q of `values` strictly below it."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.floor(q * len(ordered)))]


def calibrate(
    ctx: RagContext,
    collection: str,
    dataset: Path,
    *,
    embedder: str | None = None,
    false_abstention: float = 0.05,
    dataset_name: str | None = None,
    progress: Progress | None = None,
) -> Calibration:
    """Score the dataset's answerable questions against the build and store the threshold."""
    if not 0.0 < false_abstention < 0.5:
        raise BadInput(
            "--false-abstention must be above 0 and below 0.5 (a share of answerable "
            "questions the gate may turn away, e.g. 0.05)."
        )
    ds = load_dataset(dataset, dataset_name)
    build, emb = ctx.retriever.resolve(collection, embedder)
    index = ChunkIndex(build_chunks(ctx.store, build))
    asked = [
        q for q in ds.questions if not q.unanswerable and index.gold(q).in_collection is not False
    ]
    if len(asked) < MIN_QUESTIONS:
        raise BadInput(
            f"{ds.name} has {len(asked)} questions the collection answers; calibrating the "
            f"relevance gate needs at least {MIN_QUESTIONS}.",
            hint="Use a QA set about these documents (the one `llm synth --qa` read, or your "
            "own JSONL of question/answer lines).",
        )
    best: list[float] = []
    for i, q in enumerate(asked, start=1):
        found = ctx.retriever.retrieve(
            collection, q.question, mode="dense", top_k=1, embedder=emb.name
        )
        best.append(found.best_dense if found.best_dense is not None else 0.0)
        if progress:
            progress(i, len(asked))
    # rounded down: rounding up could put the quantile's own question below the threshold
    threshold = math.floor(quantile(best, false_abstention) * 1e6) / 1e6
    with ctx.collection_lock(collection):
        build, _ = ctx.retriever.resolve(collection, emb.name)
        ctx.store.set_min_relevance(build, threshold)
    return Calibration(
        collection=collection,
        embedder=emb.name,
        min_relevance=threshold,
        questions=len(asked),
        skipped=len(ds.questions) - len(asked),
        false_abstention=round(sum(b < threshold for b in best) / len(best), 4),
        best_similarity={
            p: round(quantile(best, q), 4) for p, q in (("p5", 0.05), ("p50", 0.5), ("p95", 0.95))
        },
    )


def clear(ctx: RagContext, collection: str, embedder: str | None = None) -> Calibration:
    """Turn the gate off for the build."""
    with ctx.collection_lock(collection):
        build, emb = ctx.retriever.resolve(collection, embedder)
        ctx.store.set_min_relevance(build, None)
    return Calibration(collection=collection, embedder=emb.name, min_relevance=None)
