"""The bodies of background jobs: an embedding evaluation and a collection reindex.

Both reuse the code the CLI runs (services.embed_tuner's evaluate and report, and
rag_api.reindex), so a report made from the UI is the same as `tunestack embed eval`'s,
and they share the API's loaded embedders instead of loading a second copy.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from services.rag_api.jobs import Progress
from services.rag_api.reindex import reindex

if TYPE_CHECKING:
    from services.common.embedders import Embedder
    from services.rag_api.state import AppState

HEADLINE = ("hit@1", "hit@3", "hit@5", "hit@10", "ndcg@10", "map@100")


class _CountingEmbedder:
    """An Embedder stand-in that encodes in slices and reports each one.

    evaluate() encodes a whole corpus in one call; slicing it (256 texts at a time, so
    batching stays efficient) is what lets the UI show real progress instead of a spinner.
    """

    def __init__(self, inner: Embedder, tick: Any, step: int = 256) -> None:
        self._inner = inner
        self._tick = tick
        self._step = step
        self._count = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def encode(self, texts: list[str], **kwargs: Any) -> np.ndarray:
        if not texts:
            return self._inner.encode(texts, **kwargs)
        parts = []
        for i in range(0, len(texts), self._step):
            part = texts[i : i + self._step]
            parts.append(self._inner.encode(part, **kwargs))
            self._count += len(part)
            self._tick(self._count)
        return np.concatenate(parts)


def run_eval(
    st: AppState, path: Path, models: list[str], top_k: int, progress: Progress
) -> dict[str, Any]:
    from services.embed_tuner.datasets import load_qa
    from services.embed_tuner.evaluate import error_reduction, evaluate
    from services.embed_tuner.report import write_report

    progress(0, 0, f"reading {path.name}")
    ds = load_qa(path)
    per_model = len(ds.corpus) + len(ds.queries)
    total = per_model * len(models)
    results: dict[str, dict[str, float]] = {}
    for i, name in enumerate(models):
        offset = i * per_model
        progress(offset, total, f"loading {name}")
        emb = st.pool.get(name)

        def tick(n: int, offset: int = offset, name: str = name) -> None:
            progress(offset + n, total, f"{name}: encoded {n}/{per_model} texts")

        results[name] = evaluate(ds, cast("Embedder", _CountingEmbedder(emb, tick)), top_k)
    progress(total, total, "writing the report")
    first = models[0]
    mrr = f"mrr@{top_k}"
    reduction = {
        n: error_reduction(results[first], r, mrr) for n, r in results.items() if n != first
    }
    folder = write_report(
        st.registry.reports,
        str(path),
        results,
        {
            "error_reduction": reduction,
            "top_k": top_k,
            "precision": st.settings.embed_precision,
            "made_by": "rag-api job",
        },
    )
    headline = {
        n: {k: float(v) for k, v in r.items() if k in (*HEADLINE, mrr)} for n, r in results.items()
    }
    return {"report": folder.name, "models": headline, "error_reduction": reduction}


def run_reindex(st: AppState, collection: str, embedder: str, progress: Progress) -> dict[str, Any]:
    progress(0, 0, f"loading {embedder}")
    emb = st.pool.get(embedder)
    progress(0, 0, f"waiting for other writes to '{collection}'")
    with st.ingest_locks[collection]:
        progress(0, 0, f"embedding the stored chunks with {emb.name}")
        build, n = reindex(
            st.store,
            collection,
            emb,
            st.settings.default_embedder,
            batch=128,  # finer progress; one Chroma upsert per 128 chunks is still cheap
            progress=lambda d, t: progress(d, t, f"embedded {d}/{t} chunks with {emb.name}"),
        )
    return {"collection": collection, "embedder": build.embedder, "chunks": n}
