"""The embedding tuner's public API: synthesize training pairs, tune, evaluate.

The CLI (`tunestack embed synth|tune|eval`) and the RAG API's evaluation job are thin
adapters over these functions, so a report made from the UI is the one `embed eval`
writes, built by the same code with the same settings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from services.common import distributed
from services.common.distributed import plan_launch
from services.common.embedders import Embedder, EmbedderPool
from services.common.errors import BadInput, disk_full_names
from services.common.ir_eval import error_reduction, evaluate
from services.common.qa import QADataset, detect, load_qa
from services.common.records import EmbedderRecord
from services.common.registry import Entry, Registry
from services.common.reports import write_report
from services.common.settings import CommonSettings
from services.embed_tuner.corpus import load_corpus_file, load_docs
from services.embed_tuner.launch import tune_data_parallel
from services.embed_tuner.records import load_records
from services.embed_tuner.settings import EmbedSettings
from services.embed_tuner.synth import LlmConfig, synthesize
from services.embed_tuner.trainer_run import RESUMED as RESUMED  # adapters print this message
from services.embed_tuner.tune import TrainData, TuneParams, tune

# (done, total, message)
Progress = Callable[[int, int, str], None]
HEADLINE = ("hit@1", "hit@3", "hit@5", "hit@10", "ndcg@10", "map@100")


def _quiet(done: int, total: int, message: str) -> None:
    pass


# ---- synthesis ---------------------------------------------------------------------------


@dataclass
class SynthRequest:
    """Where passages come from (exactly one of docs/corpus) and how queries are made."""

    docs: Path | None = None
    corpus: Path | None = None
    tokenizer_of: str = "all-minilm-l6-v2"  # sizes --docs chunks as ingest would
    llm_url: str | None = None
    llm_model: str | None = None
    per_chunk: int | None = None
    val_fraction: float | None = None
    pseudo: str | None = None  # None: EmbedSettings.pseudo
    seed: int = 0


def load_passages(
    s: EmbedSettings, pool: EmbedderPool, docs: Path | None, corpus: Path | None, tokenizer_of: str
) -> dict[str, str]:
    if (docs is None) == (corpus is None):
        raise BadInput("Give exactly one of --docs PATH or --corpus FILE.")
    if corpus is not None:
        return load_corpus_file(corpus)
    assert docs is not None
    emb = pool.get(tokenizer_of)
    return load_docs(docs, s.chunk_size, s.chunk_overlap, emb.tokens)


def synthesize_pairs(
    s: EmbedSettings,
    passages: dict[str, str],
    req: SynthRequest,
    cache: Path,
    progress: Progress = _quiet,
) -> tuple[QADataset, QADataset]:
    """(training, validation) queries over `passages`; an LLM run resumes from `cache`."""
    llm = (
        LlmConfig(base_url=req.llm_url, model=req.llm_model or s.default_llm, seed=req.seed)
        if req.llm_url
        else None
    )
    n = req.per_chunk if req.per_chunk is not None else (s.llm_per_chunk if llm else s.per_chunk)
    what = "questions" if llm else "pseudo-queries"
    return synthesize(
        passages,
        per_chunk=n,
        val_fraction=s.val_fraction if req.val_fraction is None else req.val_fraction,
        llm=llm,
        cache=cache,
        seed=req.seed,
        method=req.pseudo or s.pseudo,
        progress=lambda d, t: progress(d, t, f"{what} {d}/{t}"),
    )


# ---- tuning ---------------------------------------------------------------------------------


@dataclass
class TuneRequest:
    name: str
    base: str = "all-minilm-l6-v2"
    pairs: Path | None = None  # QA JSON / SQuAD / uniem records; else synthesize from `synth`
    synth: SynthRequest = field(default_factory=SynthRequest)
    val: Path | None = None
    epochs: float | None = None
    batch_size: int | None = None
    lr: float | None = None
    max_seq_length: int | None = None
    loss: str | None = None
    hard_negatives: int = 0
    matryoshka: list[int] = field(default_factory=list)
    overwrite: bool = False


def _training_data(
    s: EmbedSettings, registry: Registry, req: TuneRequest, progress: Progress
) -> tuple[TrainData, QADataset | None]:
    """The request's training pairs (given, or synthesized from its documents) and its
    validation set (given, or split from the synthesized queries)."""
    validation = load_qa(req.val) if req.val else None
    if req.pairs is not None:
        data = (
            TrainData.from_qa(load_qa(req.pairs))
            if detect(req.pairs) in ("qa", "squad")
            else TrainData.from_records(load_records(req.pairs))
        )
    else:
        pool = EmbedderPool(registry, precision=s.embed_precision, capacity=1)
        passages = load_passages(s, pool, req.synth.docs, req.synth.corpus, req.base)
        cache = registry.kind_dir("embedder") / f".synth-{req.name}.partial.jsonl"
        with disk_full_names(cache.parent, registry.home):
            train_qa, validation = synthesize_pairs(s, passages, req.synth, cache, progress)
        data = TrainData.from_qa(train_qa)
    return data, validation


def tune_embedder(
    s: EmbedSettings, registry: Registry, req: TuneRequest, progress: Progress = _quiet
) -> Entry[EmbedderRecord]:
    """Train data (given, or synthesized from --docs/--corpus), then fine-tune and register."""
    given = sum(x is not None for x in (req.pairs, req.synth.docs, req.synth.corpus))
    if given != 1:
        raise BadInput("Give exactly one of --pairs FILE, --docs PATH or --corpus FILE.")
    base = registry.ensure("embedder", req.base)
    if not base.record.tunable:
        raise BadInput(
            f"'{req.base}' ({base.record.provider}) has no weights here that `embed tune` "
            "can train.",
            hint="Tune a sentence-transformers model (--base all-minilm-l6-v2, or where the "
            "hub is reachable `tunestack models pull BAAI/bge-small-zh-v1.5` for Chinese); "
            f"'{req.base}' can still serve and be evaluated as it is.",
        )
    launch = plan_launch(s)
    if launch is not None:
        return tune_data_parallel(s, registry, req, launch, progress)
    with distributed.main_first():  # rank 0 synthesizes; the others read its cache
        data, validation = _training_data(s, registry, req, progress)
    params = TuneParams(
        base=req.base,
        name=req.name,
        epochs=req.epochs or s.epochs,
        batch_size=req.batch_size or s.batch_size,
        lr=s.lr if req.lr is None else req.lr,  # 0 is a value (a control run), not "unset"
        max_seq_length=req.max_seq_length or s.max_seq_length,
        loss=req.loss,
        hard_negatives=req.hard_negatives,
        matryoshka=req.matryoshka,
        seed=req.synth.seed,
    )
    # each step reports "loss X"; a resumed run first reports RESUMED + the checkpoint step
    return tune(registry, params, data, validation, progress=progress, overwrite=req.overwrite)


# ---- evaluation -----------------------------------------------------------------------------


@dataclass
class EvalRequest:
    dataset: Path
    models: list[str]
    top_k: int = 10
    made_by: str = "tunestack embed eval"


@dataclass
class EvalReport:
    dataset: Path
    queries: int
    corpus: int
    top_k: int
    results: dict[str, dict[str, float]]
    error_reduction: dict[str, float]
    folder: Path

    @property
    def baseline(self) -> str:
        return next(iter(self.results))

    def headline(self) -> dict[str, dict[str, float]]:
        keep = (*HEADLINE, f"mrr@{self.top_k}")
        return {
            n: {k: float(v) for k, v in r.items() if k in keep} for n, r in self.results.items()
        }


class _CountingEmbedder:
    """An Embedder that encodes in slices and reports each one: evaluate() encodes a
    whole corpus in one call, and slicing it (256 texts at a time, so batching stays
    efficient) is what lets a UI show real progress instead of a spinner."""

    def __init__(self, inner: Embedder, tick: Callable[[int], None], step: int = 256) -> None:
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


def evaluate_embedders(
    s: CommonSettings,
    registry: Registry,
    pool: EmbedderPool,
    req: EvalRequest,
    progress: Progress = _quiet,
) -> EvalReport:
    """Retrieval metrics of each model on one dataset (the first is the baseline), written
    as a report under TUNESTACK_HOME/reports. `pool` may be the API's, so a job reuses the
    embedders the API already has in memory."""
    if not req.models:
        raise BadInput("No model to evaluate.", hint="Name at least one registered embedder.")
    progress(0, 0, f"reading {req.dataset.name}")
    ds = load_qa(req.dataset)
    per_model = len(ds.corpus) + len(ds.queries)
    total = per_model * len(req.models)
    results: dict[str, dict[str, float]] = {}
    for i, name in enumerate(req.models):
        offset = i * per_model
        progress(offset, total, f"loading {name}")
        emb = pool.get(name)

        def tick(n: int, offset: int = offset, name: str = name) -> None:
            progress(offset + n, total, f"{name}: encoded {n}/{per_model} texts")

        counted: Any = _CountingEmbedder(emb, tick)
        results[name] = evaluate(ds, counted, req.top_k)
    progress(total, total, "writing the report")
    first = req.models[0]
    mrr = f"mrr@{req.top_k}"
    reduction = {
        n: error_reduction(results[first], r, mrr) for n, r in results.items() if n != first
    }
    with disk_full_names(registry.reports, registry.home):
        folder = write_report(
            registry.reports,
            str(req.dataset),
            results,
            {
                "error_reduction": reduction,
                "top_k": req.top_k,
                "precision": s.embed_precision,
                "made_by": req.made_by,
            },
        )
    return EvalReport(
        req.dataset, len(ds.queries), len(ds.corpus), req.top_k, results, reduction, folder
    )
