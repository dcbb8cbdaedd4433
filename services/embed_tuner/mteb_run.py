"""MTEB retrieval evaluation on the user's own data (`tunestack embed mteb`).

The `mteb` package is the reference implementation people compare embedders with; a
number it prints is one they can put next to a leaderboard's. Its tasks download their
data from the Hugging Face hub, which we never do: the user's QA set (EmbeddingQA JSON or
SQuAD/CMRC JSON, e.g. XQuAD) is wrapped as a custom `AbsTaskRetrieval` whose data is
loaded from the file, and any registered embedder (local, multilingual, Word2Vec, remote)
is wrapped as an MTEB encoder that encodes through our Embedder, queries as queries and
passages as documents. MTEB writes its usual result files (results/<model>/<revision>/
<task>.json) into the report folder; the table beside them puts the models side by side.
Our own `embed eval` computes NDCG@10 with the same definition, and a test holds the two
equal on the same data.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.common.embedders import Embedder, EmbedderPool, TextKind
from services.common.errors import BadInput
from services.common.qa import QADataset, load_qa

# MTEB scores reported side by side (its names; ndcg_at_10 is MTEB's main retrieval score)
COLUMNS = ("ndcg_at_10", "map_at_100", "mrr_at_10", "recall_at_1", "recall_at_10")


@dataclass
class MtebRequest:
    dataset: Path
    models: list[str]
    task_name: str | None = None
    out: Path | None = None


@dataclass
class MtebReport:
    task: str
    folder: Path
    scores: dict[str, dict[str, float]]  # model -> MTEB main scores (test split)
    files: list[Path]


def task_name_for(path: Path) -> str:
    stem = re.sub(r"[^0-9A-Za-z]+", "", path.stem.title())
    return f"Tunestack{stem or 'Local'}Retrieval"


def make_task(ds: QADataset, name: str, languages: list[str]) -> Any:
    """A custom MTEB retrieval task holding `ds` (no hub download: data comes from us)."""
    from datasets import Dataset  # optional extra (train): only for MTEB runs
    from mteb.abstasks.retrieval import AbsTaskRetrieval  # optional extra (train): loads in seconds
    from mteb.abstasks.task_metadata import TaskMetadata  # optional extra (train): loads in seconds

    class LocalRetrieval(AbsTaskRetrieval):
        metadata = TaskMetadata(
            name=name,
            description=f"Local QA set {ds.source} run by tunestack embed mteb.",
            reference=None,
            dataset={"path": f"local/{name}", "revision": ds.fingerprint()},
            type="Retrieval",
            category="t2t",
            modalities=["text"],
            eval_splits=["test"],
            eval_langs=languages,
            main_score="ndcg_at_10",
            date=None,
            domains=None,
            task_subtypes=None,
            license=None,
            annotations_creators=None,
            dialect=None,
            sample_creation=None,
            bibtex_citation="",
        )

        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            if self.data_loaded:
                return
            cids, qids = list(ds.corpus), list(ds.queries)
            self.dataset = {
                "default": {
                    "test": {
                        "corpus": Dataset.from_dict(
                            {"id": cids, "text": [ds.corpus[c] for c in cids]}
                        ),
                        "queries": Dataset.from_dict(
                            {"id": qids, "text": [ds.queries[q] for q in qids]}
                        ),
                        "relevant_docs": {q: {d: 1 for d in ds.relevant_docs[q]} for q in qids},
                        "top_ranked": None,
                    }
                }
            }
            self.data_loaded = True

    return LocalRetrieval()


def make_encoder(emb: Embedder) -> Any:
    """Our Embedder behind MTEB's encoder protocol (cosine on normalized vectors)."""
    from mteb.models.abs_encoder import AbsEncoder  # optional extra (train): loads in seconds
    from mteb.models.model_meta import (
        ModelMeta,
        ScoringFunction,
    )  # optional extra (train): loads in seconds
    from mteb.types import PromptType  # optional extra (train): loads in seconds

    class TunestackEncoder(AbsEncoder):
        def __init__(self) -> None:
            self.model = emb
            self.mteb_model_meta = ModelMeta.create_empty(
                overwrites={
                    "name": f"tunestack/{emb.name}",
                    "revision": emb.fingerprint,
                    "similarity_fn_name": ScoringFunction.COSINE,
                    "embed_dim": emb.dimension,
                    "framework": ["Sentence Transformers"],
                }
            )

        def encode(self, inputs: Any, *, prompt_type: Any = None, **kwargs: Any) -> np.ndarray:
            kind: TextKind = "query" if prompt_type == PromptType.query else "document"
            texts = [t for batch in inputs for t in batch["text"]]
            return emb.encode(texts, kind=kind)

    return TunestackEncoder()


def run_mteb(pool: EmbedderPool, reports: Path, req: MtebRequest) -> MtebReport:
    if not req.models:
        raise BadInput("No model to evaluate.", hint="Name at least one registered embedder.")
    import mteb  # optional extra (train): loads in seconds
    from mteb.cache import ResultCache  # optional extra (train): loads in seconds

    ds = load_qa(req.dataset)
    name = req.task_name or task_name_for(req.dataset)
    langs = ["cmn-Hans"] if _is_chinese(ds) else ["eng-Latn"]
    folder = req.out or reports / f"mteb-{time.strftime('%Y%m%d-%H%M%S')}-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    cache = ResultCache(cache_path=folder)
    scores: dict[str, dict[str, float]] = {}
    for model in req.models:
        emb = pool.get(model)
        result = mteb.evaluate(
            make_encoder(emb),
            make_task(ds, name, langs),
            cache=cache,
            overwrite_strategy="always",
            show_progress_bar=False,
            co2_tracker=False,
        )
        split = result.task_results[0].scores["test"][0]
        scores[model] = {k: float(split[k]) for k in COLUMNS if k in split}
    files = sorted(p for p in folder.rglob("*.json") if p.name != "summary.json")
    summary = {"task": name, "dataset": str(req.dataset), "models": scores}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return MtebReport(name, folder, scores, files)


def _is_chinese(ds: QADataset) -> bool:
    sample = "".join(list(ds.queries.values())[:50])
    return sum("\u4e00" <= ch <= "\u9fff" for ch in sample) > len(sample) * 0.3
