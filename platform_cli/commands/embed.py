"""`tunestack embed synth|tune|eval|mteb|add|word2vec|quantize|export|deploy`: thin commands over
services.embed_tuner (service, mteb_run, word2vec, quantize), services.converter.embedder_gguf and
services.common.embedders.remote."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from platform_cli.context import provision_bases, run, settings
from platform_cli.output import console, err_console, fail, progress_bar
from platform_cli.stack import open_stack
from services.common import atomic
from services.common.embedders import EmbedderPool
from services.common.embedders.remote import register_remote
from services.common.logs import quiet_libraries
from services.common.records import EmbedderRecord, RemoteEndpoint
from services.common.registry import Entry, Registry, dump
from services.converter.embedder_gguf import deploy_embedder, export_embedder
from services.converter.settings import ConvertSettings
from services.embed_tuner import service as svc
from services.embed_tuner.mteb_run import COLUMNS as MTEB_COLUMNS
from services.embed_tuner.mteb_run import MtebRequest, run_mteb
from services.embed_tuner.quantize import quantize_embedder
from services.embed_tuner.settings import EmbedSettings
from services.embed_tuner.word2vec import Word2VecParams, Word2VecRequest, train_word2vec

app = typer.Typer(
    help="Tune an embedder on your documents and prove it retrieves better.",
    no_args_is_help=True,
)
Docs = Annotated[Path | None, typer.Option(help="Documents folder (chunked as ingest does).")]
Corpus = Annotated[Path | None, typer.Option(help="Corpus file: SQuAD/QA JSON, JSONL, text.")]
Llm = Annotated[str | None, typer.Option(help="OpenAI-compatible base URL; offline if omitted.")]
Pseudo = Annotated[
    str | None,
    typer.Option(
        help="Offline queries: sentences | mixed (+clauses, cloze). "
        "Default: TUNESTACK_EMBED_PSEUDO (sentences)."
    ),
]
LlmModel = Annotated[str | None, typer.Option()]
PerChunk = Annotated[int | None, typer.Option(help="Queries per chunk.")]
ValFraction = Annotated[float | None, typer.Option()]
Seed = Annotated[
    int, typer.Option(help="Seeds the split, the pseudo-queries and the --llm's sampling.")
]


def _settings() -> EmbedSettings:
    quiet_libraries()
    return EmbedSettings()


@app.command()
def synth(
    out: Annotated[Path, typer.Option(help="Training set (EmbeddingQAFinetuneDataset JSON).")],
    docs: Docs = None,
    corpus: Corpus = None,
    llm: Llm = None,
    llm_model: LlmModel = None,
    per_chunk: PerChunk = None,
    val_fraction: ValFraction = None,
    embedder: Annotated[
        str, typer.Option(help="Its tokenizer sizes --docs chunks.")
    ] = "all-minilm-l6-v2",
    pseudo: Pseudo = None,
    seed: Seed = 0,
) -> None:
    """Synthesize (query, passage) pairs; writes OUT and OUT's .val twin."""
    s = _settings()
    registry = Registry(s.home_dir)
    req = svc.SynthRequest(
        docs, corpus, embedder, llm, llm_model, per_chunk, val_fraction, pseudo, seed
    )
    provision_bases(registry, "embedder", [embedder])
    pool = EmbedderPool(registry, precision=s.embed_precision, capacity=1)
    passages = run(lambda: svc.load_passages(s, pool, docs, corpus, embedder))
    with progress_bar("Generating questions" if llm else "Pseudo-queries") as prog:
        task = prog.task_ids[0]
        train, val = run(
            lambda: svc.synthesize_pairs(
                s,
                passages,
                req,
                out.with_suffix(".partial.jsonl"),
                lambda d, t, _m: prog.update(task, completed=d, total=t),
            )
        )
    train.save(out)
    val_path = out.with_name(out.stem + ".val" + out.suffix)
    val.save(val_path)
    console.print(
        f"{len(train.queries)} training and {len(val.queries)} validation queries "
        f"over {len(passages)} passages -> {out}, {val_path}"
    )


@app.command()
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
    llm_model: LlmModel = None,
    per_chunk: PerChunk = None,
    val_fraction: ValFraction = None,
    val: Annotated[Path | None, typer.Option(help="Validation set (QA JSON) for --pairs.")] = None,
    epochs: Annotated[float | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    lr: Annotated[float | None, typer.Option()] = None,
    max_seq_length: Annotated[int | None, typer.Option()] = None,
    loss: Annotated[str | None, typer.Option(help="mnrl | cached-mnrl | triplet | cosent")] = None,
    hard_negatives: Annotated[int, typer.Option(help="Mined negatives per pair.")] = 0,
    matryoshka: Annotated[str | None, typer.Option(help="e.g. 384,256,128,64")] = None,
    pseudo: Pseudo = None,
    seed: Seed = 0,
    overwrite: bool = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Fine-tune an embedder (--docs/--corpus: synthesize queries first, then train).

    Data-parallel with NPROC_PER_NODE=2 (NNODES, NODE_RANK, MASTER_ADDR for several
    nodes), as `llm train`; MNRL then scores each query against every rank's passages.
    """
    s = _settings()
    try:
        dims = [int(d) for d in matryoshka.split(",")] if matryoshka else []
    except ValueError:
        fail(f"--matryoshka {matryoshka}: give dimensions like 384,256,128.")
    synth_req = svc.SynthRequest(
        docs, corpus, base, llm, llm_model, per_chunk, val_fraction, pseudo, seed
    )
    req = svc.TuneRequest(
        name=name,
        base=base,
        pairs=pairs,
        synth=synth_req,
        val=val,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        max_seq_length=max_seq_length,
        loss=loss,
        hard_negatives=hard_negatives,
        matryoshka=dims,
        overwrite=overwrite,
    )
    with progress_bar("Tuning") as prog:
        task = prog.task_ids[0]

        def show(done: int, total: int, item: str) -> None:
            if item.startswith(svc.RESUMED):  # said once, and kept when the bar is hidden
                err_console.print(f"{name}: {item}", highlight=False)
            prog.update(task, completed=done, total=total, item=item)

        entry = run(lambda: svc.tune_embedder(s, Registry(s.home_dir), req, show))
    if as_json:
        console.print_json(json.dumps(dump(entry.record), default=str))
    else:
        print_tuned(entry)


@app.command()
def mteb(
    dataset: Annotated[
        Path, typer.Option(help="EmbeddingQA JSON or SQuAD/CMRC JSON (e.g. XQuAD).")
    ],
    model: Annotated[list[str], typer.Option(help="Registered embedder; repeat to compare.")],
    task_name: Annotated[
        str | None, typer.Option(help="MTEB task name (default: from the file name).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Report folder.")] = None,
) -> None:
    """MTEB retrieval evaluation of your QA set as a custom task (no hub downloads):
    MTEB's result files and a side-by-side table; NDCG@10 equals `embed eval`'s."""
    s = _settings()
    registry = Registry(s.home_dir)
    provision_bases(registry, "embedder", model)
    pool = EmbedderPool(registry, precision=s.embed_precision, capacity=1)
    req = MtebRequest(dataset, model, task_name, out)
    with err_console.status("Running MTEB..."):
        report = run(lambda: run_mteb(pool, registry.reports, req))
    t = Table("model", *(c.replace("_at_", "@") for c in MTEB_COLUMNS), title=report.task)
    for name, sc in report.scores.items():
        t.add_row(name, *(f"{sc[c]:.4f}" if c in sc else "-" for c in MTEB_COLUMNS))
    console.print(t)
    console.print(f"MTEB result files: {report.folder}/results/; summary.json beside them")


@app.command()
def export(
    name: Annotated[str, typer.Argument(help="A sentence-transformers embedder.")],
    gguf: Annotated[bool, typer.Option("--gguf", help="Convert to GGUF (llama.cpp).")] = False,
    outtype: Annotated[str, typer.Option(help="f16 | f32")] = "f16",
) -> None:
    """Convert an embedder to GGUF with llama.cpp's converter and check parity: cosine >=
    0.99 with sentence-transformers on 200 texts, else marked not ok (deploy refuses it)."""
    if not gguf:
        fail("Name the format: --gguf (the only one so far).")
    s = ConvertSettings()
    registry = Registry(s.home_dir)
    entry = run(lambda: export_embedder(s, registry, name, outtype=outtype, say=err_console.print))
    ex = entry.record.gguf
    assert ex is not None
    p = ex.parity
    verdict = "[green]ok[/]" if ex.ok else "[red]FAILED: " + "; ".join(p.problems()) + "[/]"
    console.print(
        f"{ex.file.path} ({ex.file.size / 2**20:.0f} MB): cosine min {p.min_cosine:.6f}, "
        f"median {p.median_cosine:.6f} on {p.texts} texts (window {p.window}) {verdict}"
    )
    if not ex.ok:
        raise typer.Exit(2)


@app.command()
def deploy(
    name: Annotated[str, typer.Argument(help="An embedder exported with --gguf.")],
    to: Annotated[str, typer.Option(help="ollama | llamacpp")] = "ollama",
    model: Annotated[str | None, typer.Option(help="Name on the server (default NAME).")] = None,
    register_as: Annotated[
        str | None, typer.Option("--as", help="Registry name (default NAME-TO).")
    ] = None,
) -> None:
    """Serve the GGUF as an embedding model (Ollama, or the local stack's llama.cpp
    embedding server), check the served vectors against sentence-transformers', and
    register it as an embedder."""
    s = settings()
    target = run(lambda: open_stack(s, None).embed_target(to))
    entry = run(
        lambda: deploy_embedder(
            Registry(s.home_dir),
            name,
            target,
            model=model,
            register_as=register_as,
            say=err_console.print,
        )
    )
    console.print(f"Use it: tunestack ingest DOCS -c C --embedder {entry.name}")


@app.command()
def quantize(
    name: Annotated[str, typer.Argument(help="A sentence-transformers embedder.")],
    register_as: Annotated[
        str | None, typer.Option("--as", help="Registry name (default NAME-int8).")
    ] = None,
) -> None:
    """A faster CPU encoder: NAME as ONNX with dynamic int8 weights (onnxruntime),
    registered as a new embedder; its cosine to NAME on 200 texts is recorded."""
    s = _settings()
    registry = Registry(s.home_dir)
    provision_bases(registry, "embedder", [name])
    with err_console.status(f"Exporting {name} to ONNX and quantizing to int8..."):
        entry = run(lambda: quantize_embedder(registry, name, register_as))
    cos = entry.record.metrics.get("cosine_to_source", {})
    console.print(
        f"Registered embedder [bold]{entry.name}[/] (onnx-int8): cosine to {name} min "
        f"{cos.get('min')}, median {cos.get('median')} on {cos.get('texts')} texts."
    )
    console.print(
        f"Check it on your data: tunestack embed eval --dataset QA.json --model {name} "
        f"--model {entry.name}"
    )


@app.command()
def word2vec(
    name: Annotated[str, typer.Option(help="Registry name of the baseline embedder.")],
    docs: Docs = None,
    corpus: Corpus = None,
    dim: Annotated[int, typer.Option(help="Vector size.")] = 200,
    window: Annotated[int, typer.Option(help="Context words on each side.")] = 10,
    min_count: Annotated[int, typer.Option(help="Ignore rarer words.")] = 2,
    epochs: Annotated[
        int | None, typer.Option(help="Passes; default: 10M words' worth, 5-100.")
    ] = None,
    seed: int = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
) -> None:
    """Train a Word2Vec skip-gram baseline on your corpus (jieba words for Chinese,
    mean-pooled): compare it with `embed eval` to see what a transformer buys you."""
    s = _settings()
    registry = Registry(s.home_dir)
    provision_bases(registry, "embedder", ["all-minilm-l6-v2"])
    pool = EmbedderPool(registry, precision=s.embed_precision, capacity=1)
    passages = run(lambda: svc.load_passages(s, pool, docs, corpus, "all-minilm-l6-v2"))
    params = Word2VecParams(dim, window, min_count, epochs, seed)
    req = Word2VecRequest(name, passages, str(docs or corpus), params, overwrite)
    with err_console.status("Training Word2Vec (skip-gram)..."):
        entry = run(lambda: train_word2vec(registry, req))
    d = entry.record.data or {}
    console.print(
        f"Registered embedder [bold]{name}[/]: {d.get('vocabulary')} words x {dim} dims from "
        f"{d.get('passages')} passages ({d.get('words')} tokens, "
        f"{entry.record.parameters.get('epochs')} epochs, {d.get('train_seconds')} s)."
    )
    console.print(f"Compare: tunestack embed eval --dataset QA.json --model {name} --model ...")


@app.command()
def add(
    name: Annotated[str, typer.Argument(help="Registry name for the embedder.")],
    provider: Annotated[str, typer.Option(help="openai-compatible | ollama")],
    model: Annotated[str, typer.Option(help="The provider's embedding model.")],
    base_url: Annotated[
        str | None,
        typer.Option(help="OpenAI-compatible base URL (ends in /v1); Ollama: OLLAMA_HOST."),
    ] = None,
    api_key_env: Annotated[
        str | None, typer.Option(help="Variable holding the key (read at each call).")
    ] = None,
    api_key_file: Annotated[
        Path | None, typer.Option(help="File holding the key (a mounted secret).")
    ] = None,
    dimensions: Annotated[int | None, typer.Option(help="Requested vector size.")] = None,
    max_batch: Annotated[int, typer.Option(help="Inputs per request.")] = 64,
    query_prefix: Annotated[str, typer.Option(help="Prepended to queries.")] = "",
    document_prefix: Annotated[str, typer.Option(help="Prepended to documents.")] = "",
    replace: Annotated[bool, typer.Option("--replace")] = False,
    probe: Annotated[
        bool, typer.Option(help="Embed one text now to check URL, model and key.")
    ] = True,
) -> None:
    """Register a remote embedder: an OpenAI-compatible /v1/embeddings or Ollama's
    /api/embed. The registry keeps the variable's name, never the key."""
    s = _settings()
    endpoint = RemoteEndpoint(
        base_url=base_url or (s.ollama_host if provider == "ollama" else ""),
        model=model,
        dimensions=dimensions,
        api_key_env=api_key_env,
        api_key_file=str(api_key_file.expanduser().resolve()) if api_key_file else None,
        max_batch=max_batch,
        query_prefix=query_prefix,
        document_prefix=document_prefix,
    )
    registry = Registry(s.home_dir)
    entry = run(
        lambda: register_remote(registry, name, provider, endpoint, replace=replace, probe=probe)
    )
    rec = entry.record
    console.print(
        f"Registered embedder [bold]{name}[/]: {provider} {model} at "
        f"{rec.source.split(':', 1)[1] if rec.source else endpoint.base_url}, "
        f"dimension {rec.dimension or 'unknown until first use'}, fingerprint {rec.fingerprint}."
    )
    console.print(f"Use it: tunestack ingest DOCS --collection C --embedder {name}")


def print_tuned(entry: Entry[EmbedderRecord]) -> None:
    m = entry.record.metrics
    scores = ", ".join(
        f"{k} {v:.4f}" for k, v in m["validation"].items() if k.endswith(("mrr@10", "accuracy@1"))
    )
    console.print(
        f"Registered embedder [bold]{entry.name}[/] ({entry.fingerprint}) in "
        f"{m['train_seconds']:.0f}s; validation {scores}\n"
        f"  loss curve: {entry.dir / 'training_loss.png'}"
    )


@app.command("eval")
def eval_cmd(
    dataset: Annotated[Path, typer.Option(help="EmbeddingQAFinetuneDataset or SQuAD JSON.")],
    model: Annotated[list[str], typer.Option(help="Registered embedder; repeat to compare.")],
    top_k: Annotated[int, typer.Option(help="k of MRR@k.")] = 10,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write metrics JSON here.")
    ] = None,
) -> None:
    """Retrieval metrics per model (hit@k, MRR@k, NDCG@10, recall, MAP@100) and a report."""
    s = _settings()
    registry = Registry(s.home_dir)
    provision_bases(registry, "embedder", model)
    pool = EmbedderPool(registry, precision=s.embed_precision, capacity=1)
    with progress_bar("Evaluating") as prog:
        task = prog.task_ids[0]
        report = run(
            lambda: svc.evaluate_embedders(
                s,
                registry,
                pool,
                svc.EvalRequest(dataset, model, top_k),
                lambda d, t, msg: prog.update(task, completed=d, total=t or None, item=msg),
            )
        )
    if json_out:
        atomic.write_json(json_out, {"models": report.results})
    print_eval(report)


def print_eval(report: svc.EvalReport) -> None:
    k = report.top_k
    cols = ("hit@1", "hit@5", "hit@10", f"mrr@{k}", "ndcg@10", "map@100")
    title = f"{report.dataset.name}: {report.queries} queries, {report.corpus} passages"
    t = Table("model", *cols, "encode s", title=title)
    for n, r in report.results.items():
        t.add_row(n, *(f"{r[c]:.4f}" for c in cols), f"{r['encode_seconds']:.1f}")
    console.print(t)
    for n, v in report.error_reduction.items():
        console.print(f"{n}: error (1 - MRR@{k}) reduced by {v:.1%} vs {report.baseline}")
    console.print(f"report: {report.folder}/report.md, metrics.png")
