"""Tuning an embedder and training an LLM as API jobs (POST /v1/jobs/tune, /v1/jobs/train).

Both bodies call the service functions the CLI calls (embed_tuner.service.tune_embedder,
trainer.service.train), so a run started from the API is `tunestack embed tune`'s or
`tunestack llm train`'s: same checks, same outputs, same registry entry, and it resumes
the same way when it is run again (the trainer from its last checkpoint, the tuner from
its own), which is what a queue does when the worker running it died.

A request names only things the server already has: a registered or bundled base model,
a collection, a dataset under TUNESTACK_HOME. None of its fields is a server path, a URL
or code, so an admin key cannot make a worker read another folder, download a model or
run a model folder's Python: the keys of a LLaMA-Factory config that would (REFUSED_KEYS)
are refused before anything is queued, and the CLI remains the way to use them.

They are the long jobs: on queue workers they go to a queue of their own (job_queue.TRAIN_QUEUE),
which only workers that have the training libraries take (services.rag_api.job_worker).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from services.common import atomic
from services.common.api_schemas import TrainJobRequest, TuneJobRequest
from services.common.errors import BadInput, Conflict, NotFound
from services.common.registry import Registry
from services.embed_tuner.service import SynthRequest, TuneRequest, tune_embedder
from services.embed_tuner.settings import EmbedSettings
from services.rag_api.collections import reindex_collection
from services.rag_api.context import RagContext
from services.rag_api.job_checks import existing_collection
from services.rag_api.jobs import Progress
from services.rag_api.reindex import source_build
from services.trainer.config import load_config
from services.trainer.datasets import dataset_attr
from services.trainer.model_loading import registry_name
from services.trainer.service import TrainRequest, train
from services.trainer.settings import TrainSettings

LLM_DATA = "llm-data"  # TUNESTACK_HOME/llm-data: the API's LLaMA-Factory dataset_dir
CONFIGS = Path("jobs") / "train"  # TUNESTACK_HOME/jobs/train/<run>.yaml: what a job trained

REFUSED_KEYS = {
    "dataset_dir": f"the API trains on the datasets in TUNESTACK_HOME/{LLM_DATA}",
    "output_dir": "a run's outputs go to its registry folder",
    "logging_dir": "the TensorBoard folder is the run's own",
    "deepspeed": "a DeepSpeed config is a file on the training machine",
    "fsdp_config": "an FSDP config is a file on the training machine",
    "ref_model": "a reference model other than the base is named by path",
    "trust_remote_code": "it runs Python code shipped in a model folder",
    "tokenized_path": "it names a server folder",
    "cache_dir": "it names a server folder",
    "run_name": "give it as run_name beside config",
}
# a registry name, or a hub id as `tunestack models pull` registered it (org/name)
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def llm_data_dir(registry: Registry) -> Path:
    return registry.home / LLM_DATA


# ---- checks before a job is queued ---------------------------------------------------------


def check_tune(
    ctx: RagContext, body: TuneJobRequest, resolve: Callable[[str], Path]
) -> dict[str, str]:
    """What `embed tune` would refuse, said at once: exactly one source, a base that can
    be tuned, a name that is free (or overwrite), an existing collection. Returns the
    server paths of the named datasets (`dataset`, `validation`) for the job."""
    if (body.collection is None) == (body.dataset is None):
        raise BadInput(
            "Give exactly one of 'collection' (tune on its chunks) or 'dataset' (its queries).",
            hint="GET /v1/collections and GET /v1/datasets list the names.",
        )
    if body.name == body.base:
        raise BadInput(f"'{body.name}' is the base's own name.", hint="Name the tuned model.")
    base = ctx.registry.ensure("embedder", body.base)
    if not base.record.tunable:
        raise BadInput(
            f"'{body.base}' ({base.record.provider}) has no weights here that can be tuned.",
            hint="Tune a sentence-transformers model, e.g. all-minilm-l6-v2.",
        )
    if not body.overwrite and body.name in _registered(ctx.registry, "embedder"):
        raise Conflict(
            f"An embedder named '{body.name}' exists.",
            hint="Pick another name, or set overwrite: true to replace it.",
        )
    if body.collection is not None:
        existing_collection(ctx, body.collection)
    named = {"dataset": body.dataset, "validation": body.validation}
    return {k: str(resolve(v)) for k, v in named.items() if v is not None}


def corpus_file(registry: Registry, name: str) -> Path:
    """Where a tune job on a collection writes its chunks (hidden from the registry)."""
    return registry.kind_dir("embedder") / f".corpus-{name}.jsonl"


def check_train(ctx: RagContext, body: TrainJobRequest) -> dict[str, Any]:
    """The config as the job will train it (JSON values), refused now if `llm train`
    would refuse it: unknown or unsafe keys, an unknown base model or dataset, a run name
    that is taken."""
    cfg = body.config
    refused = [k for k in cfg if k in REFUSED_KEYS]
    if isinstance(cfg.get("resume_from_checkpoint"), str):
        refused.append("resume_from_checkpoint")
    if refused:
        why = "; ".join(
            f"'{k}': {REFUSED_KEYS.get(k, 'a checkpoint path; true resumes from the latest')}"
            for k in refused
        )
        raise BadInput(
            f"Key(s) the API does not take: {why}.",
            hint="Remove them, or run `tunestack llm train CONFIG.yaml` on the server.",
        )
    model = cfg.get("model_name_or_path")
    if not isinstance(model, str) or not MODEL_NAME.match(model):
        raise BadInput(
            "model_name_or_path must name a registered base LLM (no paths).",
            hint="GET /v1/registry/models lists them.",
        )
    _check_base(ctx.registry, model)
    data_dir = llm_data_dir(ctx.registry)
    values = {**cfg, "run_name": body.run_name, "dataset_dir": str(data_dir)}
    parsed, _ = load_config(None, values)
    if not (data_dir / "dataset_info.json").is_file():
        raise NotFound(
            f"No LLM training data: TUNESTACK_HOME/{LLM_DATA}/dataset_info.json is missing.",
            hint=f"Write one with `tunestack llm synth --out TUNESTACK_HOME/{LLM_DATA}` or "
            "copy a LLaMA-Factory data folder there.",
        )
    for name in [*parsed.dataset, *parsed.eval_dataset]:
        if dataset_attr(name, data_dir).hf_hub_url:
            raise BadInput(
                f"Dataset '{name}' comes from the Hugging Face hub; the API trains on local "
                "files only.",
                hint=f"Download it and point its file_name at a file in {LLM_DATA}/.",
            )
    taken = body.run_name in _registered(ctx.registry, "llm")
    if taken and not parsed.overwrite_output_dir:
        raise Conflict(
            f"A run named '{body.run_name}' exists.",
            hint="Pick another run_name, or set overwrite_output_dir: true in config.",
        )
    return {k: v for k, v in values.items() if k != "dataset_dir"}


def _check_base(registry: Registry, model: str) -> None:
    name = registry_name(model, registry)
    for row in registry.entries("llm"):
        if row.name == name:
            if row.record is not None and row.record.base_model:
                raise BadInput(
                    f"'{model}' is a fine-tuned run, not a base model.",
                    hint=f"Train from its base: model_name_or_path: {row.record.base_model}",
                )
            return
    bases = [r.name for r in registry.entries("llm") if r.record is None or not r.record.base_model]
    raise NotFound(
        f"No base LLM named '{model}' is registered.",
        hint="Base LLMs: " + (", ".join(bases) or "none") + ".",
    )


def _registered(registry: Registry, kind: str) -> set[str]:
    return {r.name for r in registry.entries(kind) if r.record is not None}  # type: ignore[arg-type]


# ---- the job bodies --------------------------------------------------------------------------


def run_tune(ctx: RagContext, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Tune on a collection's chunks (pseudo-queries, offline) or a dataset's queries, then
    build the collection for the tuned embedder when asked."""
    s = EmbedSettings()
    collection = args.get("collection")
    synth = SynthRequest(tokenizer_of=args["base"])
    pairs = Path(args["dataset"]) if args.get("dataset") else None
    if collection is not None:
        synth.corpus = _export_chunks(ctx, collection, args["name"], progress)
    req = TuneRequest(
        name=args["name"],
        base=args["base"],
        pairs=pairs,
        synth=synth,
        val=Path(args["validation"]) if args.get("validation") else None,
        epochs=args.get("epochs"),
        batch_size=args.get("batch_size"),
        lr=args.get("lr"),
        loss=args.get("loss"),
        hard_negatives=args.get("hard_negatives", 0),
        overwrite=args.get("overwrite", False),
    )
    entry = tune_embedder(s, ctx.registry, req, progress)
    rec = entry.record
    out: dict[str, Any] = {"embedder": entry.name, "base": args["base"], "metrics": rec.metrics}
    if collection is not None and args.get("reindex", True):
        progress(0, 0, f"building '{collection}' for {entry.name}")
        build, n = reindex_collection(
            ctx,
            collection,
            entry.name,
            batch=128,
            progress=lambda d, t: progress(d, t, f"embedded {d}/{t} chunks with {entry.name}"),
        )
        out["collection"] = {"name": collection, "embedder": build.embedder, "chunks": n}
    return out


def _export_chunks(ctx: RagContext, collection: str, name: str, progress: Progress) -> Path:
    """The collection's chunks as a corpus JSONL (id, text) for the tuner's synthesis: the
    passages it was ingested as are the passages the tuned model will rank."""
    build = source_build(ctx.store, collection, ctx.settings.default_embedder)
    progress(0, 0, f"reading the chunks of '{collection}'")
    rows = [
        json.dumps({"id": r["id"], "text": r["documents"]}, ensure_ascii=False)
        for r in ctx.store.iter_records(build, include=["documents"])
        if (r["documents"] or "").strip()
    ]
    if not rows:
        raise BadInput(
            f"Collection '{collection}' has no text to tune on.",
            hint="Ingest documents into it first (POST /v1/ingest, or `tunestack ingest`).",
        )
    path = corpus_file(ctx.registry, name)
    atomic.write_text(path, "\n".join(rows) + "\n")
    return path


def run_train(ctx: RagContext, args: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """`tunestack llm train` on the config the route checked, written first to
    TUNESTACK_HOME/jobs/train/<run>.yaml: the file the CLI can resume from, and a record of
    what was trained."""
    config = {**args["config"], "dataset_dir": str(llm_data_dir(ctx.registry))}
    path = ctx.registry.home / CONFIGS / f"{config['run_name']}.yaml"
    atomic.write_text(path, yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    step = {"done": 0, "total": 0}

    def on_step(done: int, total: int, message: str) -> None:
        step.update(done=done, total=total)
        progress(done, total, message)

    def say(message: str) -> None:  # the CLI's lines, as the job's message
        progress(step["done"], step["total"], message.strip().splitlines()[0][:300])

    settings = TrainSettings().model_copy(update={"progress": False})
    res = train(settings, TrainRequest(path), say, on_step)
    if res is None:  # a multi-node launch whose node 0 is elsewhere
        return {"run": config["run_name"], "note": "node 0 wrote the outputs"}
    keep = ("train_loss", "eval_loss", "train_runtime", "train_steps_per_second", "epoch")
    return {
        "run": res.run_name,
        "resumed_from": res.resumed_from,
        "metrics": {k: res.metrics[k] for k in keep if k in res.metrics},
        "ignored_keys": res.ignored_keys,
        "next": f"tunestack llm export {res.run_name}",
    }
