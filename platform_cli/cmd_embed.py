"""`tunestack embed synth|tune|eval`: thin commands over services.embed_tuner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from platform_cli.output import console, fail, progress_bar
from services.common.errors import BadInput, TunestackError
from services.common.logs import quiet_libraries
from services.common.registry import Registry

embed_app = typer.Typer(
    help="Tune an embedder on your documents and prove it retrieves better.",
    no_args_is_help=True,
)


def _settings() -> Any:
    from services.embed_tuner.settings import EmbedSettings

    quiet_libraries()
    return EmbedSettings()


def _corpus(s: Any, docs: Path | None, corpus: Path | None, embedder: str) -> dict[str, str]:
    from services.embed_tuner.corpus import load_corpus_file, load_docs

    if (docs is None) == (corpus is None):
        raise BadInput("Give exactly one of --docs PATH or --corpus FILE.")
    if corpus is not None:
        return load_corpus_file(corpus)
    assert docs is not None
    from services.common.embedders import EmbedderPool

    emb = EmbedderPool(Registry(s.home_dir), precision=s.embed_precision).get(embedder)
    return load_docs(docs, s.chunk_size, s.chunk_overlap, emb.tokens)


def _synth(
    s: Any,
    corpus: dict[str, str],
    per_chunk: int | None,
    val_fraction: float | None,
    llm: str | None,
    llm_model: str | None,
    cache: Path,
    seed: int,
    method: str = "sentences",
) -> tuple[Any, Any]:
    from services.embed_tuner.synth import LlmConfig, synthesize

    cfg = None
    if llm:
        cfg = LlmConfig(base_url=llm, model=llm_model or s.default_llm)
    n = per_chunk if per_chunk is not None else (s.llm_per_chunk if llm else s.per_chunk)
    with progress_bar("Generating questions" if llm else "Pseudo-queries") as prog:
        task = prog.task_ids[0]
        return synthesize(
            corpus,
            per_chunk=n,
            val_fraction=s.val_fraction if val_fraction is None else val_fraction,
            llm=cfg,
            cache=cache,
            seed=seed,
            method=method,
            progress=lambda d, t: prog.update(task, completed=d, total=t),
        )


Docs = Annotated[Path | None, typer.Option(help="Documents folder (chunked as ingest does).")]
Corpus = Annotated[Path | None, typer.Option(help="Corpus file: SQuAD/QA JSON, JSONL, text.")]
Llm = Annotated[str | None, typer.Option(help="OpenAI-compatible base URL; offline if omitted.")]
Pseudo = Annotated[
    str, typer.Option(help="Offline queries: sentences (default) | mixed (+clauses, cloze).")
]


@embed_app.command()
def synth(
    out: Annotated[Path, typer.Option(help="Training set (EmbeddingQAFinetuneDataset JSON).")],
    docs: Docs = None,
    corpus: Corpus = None,
    llm: Llm = None,
    llm_model: Annotated[str | None, typer.Option()] = None,
    per_chunk: Annotated[int | None, typer.Option(help="Queries per chunk.")] = None,
    val_fraction: Annotated[float | None, typer.Option()] = None,
    embedder: Annotated[
        str, typer.Option(help="Its tokenizer sizes --docs chunks.")
    ] = "all-minilm-l6-v2",
    pseudo: Pseudo = "sentences",
    seed: int = 0,
) -> None:
    """Synthesize (query, passage) pairs; writes OUT and OUT's .val twin."""
    s = _settings()
    try:
        passages = _corpus(s, docs, corpus, embedder)
        train, val = _synth(
            s,
            passages,
            per_chunk,
            val_fraction,
            llm,
            llm_model,
            out.with_suffix(".partial.jsonl"),
            seed,
            pseudo,
        )
        train.save(out)
        val_path = out.with_name(out.stem + ".val" + out.suffix)
        val.save(val_path)
    except TunestackError as e:
        fail(e)
    console.print(
        f"{len(train.queries)} training and {len(val.queries)} validation queries "
        f"over {len(passages)} passages -> {out}, {val_path}"
    )


@embed_app.command()
def tune(
    name: Annotated[str, typer.Option(help="Registry name of the tuned embedder.")],
    base: Annotated[
        str, typer.Option(help="Registered embedder to start from.")
    ] = "all-minilm-l6-v2",
    pairs: Annotated[
        Path | None,
        typer.Option(help="EmbeddingQAFinetuneDataset JSON, or uniem records (JSON/JSONL)."),
    ] = None,
    docs: Docs = None,
    corpus: Corpus = None,
    llm: Llm = None,
    llm_model: Annotated[str | None, typer.Option()] = None,
    per_chunk: Annotated[int | None, typer.Option()] = None,
    val_fraction: Annotated[float | None, typer.Option()] = None,
    val: Annotated[Path | None, typer.Option(help="Validation set (QA JSON) for --pairs.")] = None,
    epochs: Annotated[float | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    lr: Annotated[float | None, typer.Option()] = None,
    max_seq_length: Annotated[int | None, typer.Option()] = None,
    loss: Annotated[str | None, typer.Option(help="mnrl | cached-mnrl | triplet | cosent")] = None,
    hard_negatives: Annotated[int, typer.Option(help="Mined negatives per pair.")] = 0,
    matryoshka: Annotated[str | None, typer.Option(help="e.g. 384,256,128,64")] = None,
    pseudo: Pseudo = "sentences",
    seed: int = 0,
    overwrite: bool = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Fine-tune an embedder (--docs/--corpus: synthesize queries first, then train)."""
    from services.embed_tuner.datasets import detect, load_qa, load_records
    from services.embed_tuner.tune import TrainData, TuneParams
    from services.embed_tuner.tune import tune as run_tune

    s = _settings()
    try:
        if sum(x is not None for x in (pairs, docs, corpus)) != 1:
            raise BadInput("Give exactly one of --pairs FILE, --docs PATH or --corpus FILE.")
        validation = load_qa(val) if val else None
        if pairs is not None:
            data = (
                TrainData.from_qa(load_qa(pairs))
                if detect(pairs) in ("qa", "squad")
                else TrainData.from_records(load_records(pairs))
            )
        else:
            passages = _corpus(s, docs, corpus, base)
            cache = Registry(s.home_dir).kind_dir("embedder") / f".synth-{name}.partial.jsonl"
            train_qa, validation = _synth(
                s, passages, per_chunk, val_fraction, llm, llm_model, cache, seed, pseudo
            )
            data = TrainData.from_qa(train_qa)
        dims = [int(d) for d in matryoshka.split(",")] if matryoshka else []
        params = TuneParams(
            base=base,
            name=name,
            epochs=epochs or s.epochs,
            batch_size=batch_size or s.batch_size,
            lr=lr or s.lr,
            max_seq_length=max_seq_length or s.max_seq_length,
            loss=loss,
            hard_negatives=hard_negatives,
            matryoshka=dims,
            seed=seed,
        )
        with progress_bar("Tuning") as prog:
            task = prog.task_ids[0]

            def tick(step: int, total: int, last: float | None) -> None:
                item = f"loss {last:.4f}" if last is not None else ""
                prog.update(task, completed=step, total=total, item=item)

            entry = run_tune(
                Registry(s.home_dir), params, data, validation, progress=tick, overwrite=overwrite
            )
    except ValueError as e:
        fail(TunestackError(f"Bad option: {e}"))
    except TunestackError as e:
        fail(e)
    if as_json:
        console.print_json(json.dumps(entry.meta, default=str))
        return
    m = entry.meta["metrics"]
    console.print(
        f"Registered embedder [bold]{entry.name}[/] ({entry.fingerprint}) in "
        f"{m['train_seconds']:.0f}s; validation "
        + ", ".join(
            f"{k} {v:.4f}"
            for k, v in m["validation"].items()
            if k.endswith(("mrr@10", "accuracy@1"))
        )
        + f"\n  loss curve: {entry.dir / 'training_loss.png'}"
    )


@embed_app.command("eval")
def eval_cmd(
    dataset: Annotated[Path, typer.Option(help="EmbeddingQAFinetuneDataset or SQuAD JSON.")],
    model: Annotated[list[str], typer.Option(help="Registered embedder; repeat to compare.")],
    top_k: Annotated[int, typer.Option(help="k of MRR@k.")] = 10,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write metrics JSON here.")
    ] = None,
) -> None:
    """Retrieval metrics per model (hit@k, MRR@k, NDCG@10, recall, MAP@100) and a report."""
    from services.common import atomic
    from services.common.embedders import EmbedderPool
    from services.embed_tuner.datasets import load_qa
    from services.embed_tuner.evaluate import error_reduction, evaluate
    from services.embed_tuner.report import markdown_table, write_report

    s = _settings()
    try:
        ds = load_qa(dataset)
        pool = EmbedderPool(Registry(s.home_dir), precision=s.embed_precision, capacity=1)
        results: dict[str, dict[str, float]] = {}
        with progress_bar("Evaluating", total=len(model)) as prog:
            for i, name in enumerate(model):
                prog.update(prog.task_ids[0], completed=i, item=name)
                results[name] = evaluate(ds, pool.get(name), top_k)
            prog.update(prog.task_ids[0], completed=len(model), item="")
        first = model[0]
        reduction = {
            n: error_reduction(results[first], r, f"mrr@{top_k}")
            for n, r in results.items()
            if n != first
        }
        folder = write_report(
            Registry(s.home_dir).reports,
            str(dataset),
            results,
            {"error_reduction": reduction, "top_k": top_k, "precision": s.embed_precision},
        )
        if json_out:
            atomic.write_json(json_out, {"models": results})
    except TunestackError as e:
        fail(e)
    t = Table(
        "model",
        "hit@1",
        "hit@5",
        "hit@10",
        f"mrr@{top_k}",
        "ndcg@10",
        "map@100",
        "encode s",
        title=f"{dataset.name}: {len(ds.queries)} queries, {len(ds.corpus)} passages",
    )
    for n, r in results.items():
        t.add_row(
            n,
            *(
                f"{r[k]:.4f}"
                for k in ("hit@1", "hit@5", "hit@10", f"mrr@{top_k}", "ndcg@10", "map@100")
            ),
            f"{r['encode_seconds']:.1f}",
        )
    console.print(t)
    for n, v in reduction.items():
        console.print(f"{n}: error (1 - MRR@{top_k}) reduced by {v:.1%} vs {first}")
    console.print(f"report: {folder}/report.md, metrics.png")
    _ = markdown_table  # the same table is in report.md
