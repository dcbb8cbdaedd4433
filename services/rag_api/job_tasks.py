"""The bodies of background jobs: an embedding evaluation, a collection reindex and an
LLM deploy to Ollama.

They reuse the code the CLI runs (services.embed_tuner's evaluate and report,
rag_api.reindex, services.converter.deploy and the /v1/admin/llm switch), so a report
made from the UI is the same as `tunestack embed eval`'s, a deploy from the UI is the
same as `tunestack llm deploy --to ollama`'s, and jobs share the API's loaded embedders
instead of loading a second copy.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from services.common.errors import TunestackError
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


def run_deploy(
    st: AppState, run: str, quant: str, model: str, progress: Progress
) -> dict[str, Any]:
    """`tunestack llm deploy RUN --to ollama` inside the API: check the file, register it
    with Ollama and prove it answers, switch this API (verified again), record it.

    Nothing touches the serving LLM before the switch, and the switch itself verifies
    before it swaps, so any failure up to there leaves the previous model serving. If
    recording fails after the switch, the previous target is put back.
    """
    from services.converter import deploy as dep
    from services.rag_api.routes_llm_admin import LlmSwitch, switch_to

    host = st.settings.ollama_host
    steps = 4
    progress(0, steps, f"checking the {quant} export of {run} (size, sha256)")
    entry = st.registry.get("llm", run)
    f = dep.exported_file(entry, quant)
    progress(1, steps, f"registering '{model}' with Ollama at {host}")

    def say(msg: str) -> None:
        progress(1, steps, msg.strip())

    info = dep.deploy_ollama(st.registry, entry, model, f, host, say)
    info["quant"] = f.quant
    progress(2, steps, f"Ollama answers with '{model}'; switching the RAG API to it")
    switched = asyncio.run(
        switch_to(st, LlmSwitch(model=model, base_url=info["base_url"], run=run))
    )
    info["rag_api"] = switched
    progress(3, steps, f"recording the deployment in {run}'s meta.json")
    try:
        dep.record_deployment(st.registry, run, {**info, "by": "rag-api job"})
    except Exception as e:
        prev = switched["previous"]
        asyncio.run(
            switch_to(
                st,
                LlmSwitch(model=prev["model"], base_url=prev["base_url"], verify=False),
            )
        )
        raise TunestackError(
            f"'{model}' is registered with Ollama, but recording the deployment failed "
            f"({type(e).__name__}: {e}); the API went back to '{prev['model']}'.",
            hint=f"Check that TUNESTACK_HOME is writable, then deploy again (or: "
            f"tunestack llm deploy {run} --to ollama --quant {quant} --name {model}).",
        ) from e
    progress(steps, steps, f"'{model}' is serving")
    return {
        "run": run,
        "to": "ollama",
        "model": model,
        "quant": f.quant,
        "host": host,
        "base_url": info["base_url"],
        "verify": info["verify"],
        "previous": switched["previous"],
        "current": switched["current"],
    }
