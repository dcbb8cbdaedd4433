"""Fine-tune a registered embedder with the sentence-transformers v3+ trainer.

The result is registered atomically as a new embedder (model/ + meta.json). Checkpoints
live in a work dir beside the registry entry; rerunning the same command after a kill
resumes from the latest one (same parameters and data, checked by hash), with the
optimizer, scheduler and data order restored by the trainer.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from services.common import atomic, distributed
from services.common.errors import BadInput, DiskFull, TunestackError, disk_full_names
from services.common.hashing import dir_fingerprint
from services.common.logs import quiet_libraries
from services.common.qa import QADataset
from services.common.records import EmbedderRecord
from services.common.registry import Entry, Registry, dump, validate_name, versions
from services.common.torch_setup import configure_torch
from services.embed_tuner.plots import loss_curve
from services.embed_tuner.records import Records
from services.embed_tuner.trainer_run import Progress, complete_checkpoint, run_trainer

LOSSES = ("mnrl", "cached-mnrl", "triplet", "cosent")
DEFAULT_LOSS = {"pair": "mnrl", "triplet": "mnrl", "scored": "cosent"}
COMPATIBLE = {
    "pair": {"mnrl", "cached-mnrl"},
    "triplet": {"mnrl", "cached-mnrl", "triplet"},
    "scored": {"cosent"},
}


@dataclass
class TuneParams:
    base: str
    name: str
    epochs: float = 2.0  # EmbedSettings.epochs explains
    batch_size: int = 32
    lr: float = 5e-5  # EmbedSettings.lr explains
    max_seq_length: int = 256
    loss: str | None = None
    hard_negatives: int = 0
    matryoshka: list[int] = field(default_factory=list)
    warmup_ratio: float = 0.1
    seed: int = 0
    precision: str = "auto"
    evals_per_epoch: int = 4


@dataclass
class TrainData:
    """Rows for the trainer plus what the record kind implies for the loss."""

    kind: str  # pair | triplet | scored
    columns: dict[str, list[Any]]
    corpus: list[str]  # passages to mine hard negatives from
    source_hash: str

    @classmethod
    def from_qa(cls, ds: QADataset) -> TrainData:
        pairs = ds.pairs()
        return cls(
            "pair",
            {"anchor": [a for a, _ in pairs], "positive": [p for _, p in pairs]},
            list(ds.corpus.values()),
            ds.fingerprint(),
        )

    @classmethod
    def from_records(cls, r: Records) -> TrainData:
        h = hashlib.sha256(json.dumps(r.rows, sort_keys=True).encode()).hexdigest()[:16]
        if r.kind == "scored":
            cols: dict[str, list[Any]] = {
                "sentence1": [x["sentence1"] for x in r.rows],
                "sentence2": [x["sentence2"] for x in r.rows],
                "score": [float(x["label"]) for x in r.rows],
            }
            return cls("scored", cols, [], h)
        cols = {"anchor": [x["text"] for x in r.rows], "positive": [x["text_pos"] for x in r.rows]}
        if r.kind == "triplet":
            cols["negative"] = [x["text_neg"] for x in r.rows]
        return cls(r.kind, cols, sorted(set(cols["positive"])), h)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))


def choose_loss(kind: str, requested: str | None) -> str:
    loss = requested or DEFAULT_LOSS[kind]
    if loss not in LOSSES:
        raise BadInput(f"Unknown loss '{loss}'.", hint="Use one of " + ", ".join(LOSSES))
    if loss not in COMPATIBLE[kind]:
        raise BadInput(
            f"Loss '{loss}' does not fit {kind} records.",
            hint=f"For {kind} records use: {', '.join(sorted(COMPATIBLE[kind]))}.",
        )
    return loss


def work_dir(registry: Registry, name: str) -> Path:
    return registry.kind_dir("embedder") / f".work-{name}"


def drop_incomplete_checkpoints(wd: Path) -> None:
    """After a full disk: remove the checkpoint the trainer was writing (the space it held
    is what a rerun needs), and the whole work dir when no complete checkpoint is left to
    resume from; complete checkpoints stay, and the rerun resumes from the latest."""
    complete = False
    for p in wd.glob("checkpoint-*"):
        if complete_checkpoint(p) is None:
            shutil.rmtree(p, ignore_errors=True)
        else:
            complete = True
    if not complete:
        shutil.rmtree(wd, ignore_errors=True)


def tune(
    registry: Registry,
    params: TuneParams,
    data: TrainData,
    val: QADataset | None = None,
    *,
    progress: Progress | None = None,
    overwrite: bool = False,
) -> Entry[EmbedderRecord]:
    validate_name(params.name)
    final = registry.entry_dir("embedder", params.name)
    if (final / "meta.json").exists() and not overwrite:
        raise TunestackError(
            f"Embedder '{params.name}' already exists.",
            hint="Pick another --name, or pass --overwrite.",
        )
    base: Entry[EmbedderRecord] = registry.ensure("embedder", params.base)
    loss_name = choose_loss(data.kind, params.loss)
    if len(data) < params.batch_size:
        raise BadInput(
            f"Only {len(data)} training examples, fewer than one batch ({params.batch_size}).",
            hint=f"Lower --batch-size to at most {len(data)}, or add data.",
        )
    if any(d <= 0 for d in params.matryoshka):
        raise BadInput("--matryoshka dimensions must be positive.")
    if params.hard_negatives and data.kind != "pair":
        raise BadInput(
            f"--hard-negatives mines negatives for pairs; these are {data.kind} records.",
            hint="Drop --hard-negatives, or give (query, passage) pairs.",
        )

    quiet_libraries()
    configure_torch()
    run_key = hashlib.sha256(
        json.dumps(
            [
                asdict(params),
                data.source_hash,
                val.fingerprint() if val else None,
                base.fingerprint,
            ],
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]
    wd = work_dir(registry, params.name)
    stamp = wd / "run_key"
    main = distributed.is_main()  # with several processes, rank 0 alone writes files
    if main and wd.exists() and (not stamp.exists() or stamp.read_text() != run_key):
        shutil.rmtree(wd)  # a different run: its checkpoints cannot be resumed
    t0 = time.perf_counter()
    try:
        with disk_full_names(wd, registry.home):
            if main:
                wd.mkdir(parents=True, exist_ok=True)
                stamp.write_text(run_key)
            distributed.barrier()
            run = run_trainer(base, params, data, val, loss_name, wd, progress)
    except DiskFull:
        if main:
            drop_incomplete_checkpoints(wd)
        raise
    seconds = time.perf_counter() - t0
    if not main:
        distributed.barrier()  # rank 0 registers the result
        return registry.embedder(params.name)

    # disk_full_names inside staged_dir: it looks at the disk before the staged folder goes
    with atomic.staged_dir(final, replace=overwrite) as tmp, disk_full_names(final, registry.home):
        run.model.save(str(tmp / "model"))
        (tmp / "trainer_log.jsonl").write_text(
            "".join(json.dumps(h) + "\n" for h in run.history), encoding="utf-8"
        )
        loss_curve(
            run.history, tmp / "training_loss.png", title=f"{params.name} (from {base.name})"
        )
        record = EmbedderRecord(
            name=params.name,
            base_model=base.name,
            base_fingerprint=base.fingerprint,
            model_path=str(final / "model"),
            fingerprint=dir_fingerprint(tmp / "model")[:16],
            dimension=base.record.dimension,
            languages=base.record.languages,
            source="tunestack embed tune",
            data={
                "kind": data.kind,
                "rows": len(data),
                "hash": data.source_hash,
                "validation_queries": len(val.queries) if val else 0,
                "columns": run.columns,
                "rows_trained": run.rows,
            },
            parameters={**asdict(params), "loss": loss_name, "loss_module": run.loss},
            metrics={
                "validation": run.best,
                "train_seconds": round(seconds, 1),
                "train_rows_per_s": round(run.rows * params.epochs / seconds, 2),
                "trained_steps": list(run.trained_steps) if run.trained_steps else None,
            },
            resumed_from=run.resumed_from,
            versions=versions(),
        )
        atomic.write_json(tmp / "meta.json", dump(record))
    shutil.rmtree(wd, ignore_errors=True)
    distributed.barrier()
    return registry.embedder(params.name)
