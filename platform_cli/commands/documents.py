"""`tunestack ingest|ask|reindex|collections`: documents and questions.

ingest and reindex run the RAG API's own service functions in this process (same
chunking, same embedder, same cross-process collection lock as an upload through the
API); ask goes to the running API through the shared client.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from platform_cli.compare import compare_rankings
from platform_cli.context import provision_bases, rag_client, rag_context, run, settings
from platform_cli.output import console, err_console, fail, progress_bar
from services.common.api_client import parse_completion
from services.common.api_schemas import ChatAnswer, ChatMessage, ChatRequest, RetrievalMode
from services.rag_api import collections as svc
from services.rag_api.ingest import IngestReport

collections_app = typer.Typer(help="Collections in the vector store.", no_args_is_help=True)
STATUS_COLORS = {"ok": "green", "unchanged": "dim", "failed": "red", "removed": "yellow"}


def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (recursively).")],
    collection: Annotated[str, typer.Option("--collection", "-c")],
    embedder: Annotated[str | None, typer.Option(help="Registered embedder name.")] = None,
    chunk_size: Annotated[int | None, typer.Option(help="Chunk size in embedder tokens.")] = None,
    chunk_overlap: Annotated[int | None, typer.Option(help="Overlap in tokens.")] = None,
    prune: Annotated[bool, typer.Option(help="Remove chunks of files deleted on disk.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Ingest documents (.md .txt .pdf .docx .html) into a collection; idempotent."""
    s = settings()
    ctx = rag_context(s)
    req = svc.IngestRequest(paths, collection, embedder, chunk_size, chunk_overlap, prune)
    provision_bases(ctx.registry, "embedder", [embedder or s.default_embedder])
    with progress_bar("Ingesting") as prog:
        task = prog.task_ids[0]
        report = run(
            lambda: svc.ingest(
                ctx,
                req,
                progress=lambda item, d, t: prog.update(task, completed=d, total=t, item=item),
                waiting=lambda: err_console.print(f"Waiting for another write to {collection}..."),
            )
        )
    if as_json:
        console.print_json(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        print_report(report)
    if report.counts.get("failed"):
        raise typer.Exit(2)


def print_report(report: IngestReport) -> None:
    t = Table("file", "status", "chunks", "reason")
    for f in report.files:
        color = STATUS_COLORS.get(f.status, "white")
        t.add_row(escape(f.path), f"[{color}]{f.status}[/]", str(f.chunks), escape(f.reason))
    console.print(t)
    counts = ", ".join(f"{v} {k}" for k, v in sorted(report.counts.items()))
    console.print(
        f"{report.collection}: {counts}; {report.chunks_written} chunks written "
        f"in {report.seconds:.1f}s (embedder {report.embedder})"
    )
    for w in report.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(w)}")


def ask(
    question: Annotated[str, typer.Argument()],
    collection: Annotated[str, typer.Option("--collection", "-c")],
    embedder: Annotated[str | None, typer.Option()] = None,
    mode: Annotated[str, typer.Option(help="dense | bm25 | hybrid")] = "dense",
    top_k: Annotated[int, typer.Option()] = 4,
    compare: Annotated[
        str | None,
        typer.Option(help="Embedders to rank side by side instead of answering, e.g. A,B."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Ask a question; prints the answer with its cited sources."""
    s = settings()
    client = rag_client(s)
    if mode not in ("dense", "bm25", "hybrid"):
        fail(f"--mode {mode}: use dense, bm25 or hybrid.")
    retrieval_mode: RetrievalMode = mode  # type: ignore[assignment]
    if compare:
        names = compare.split(",")
        run(lambda: compare_rankings(client, question, collection, names, mode, top_k, as_json))
        return
    req = ChatRequest(
        model=f"rag/{collection}",
        messages=[ChatMessage(role="user", content=question)],
        top_k=top_k,
        retrieval_mode=retrieval_mode,
        embedder=embedder,
    )
    completion = run(lambda: client.chat_completion(req))
    if as_json:
        console.print_json(json.dumps(completion, ensure_ascii=False))
    else:
        print_answer(question, parse_completion(completion))


def print_answer(question: str, answer: ChatAnswer) -> None:
    """Question, answer and sources as text: escaped, since a bracket in any of them
    (`[b]`, `[/x]`) would be read as rich markup, vanish or stop the CLI."""
    console.print(f"[bold]Q:[/] {escape(question)}", highlight=False)
    console.print(f"[bold]A:[/] {escape(answer.content)}", highlight=False)
    for src in answer.sources:
        where = escape(src.file_name + (f" p.{src.page}" if src.page else ""))
        console.print(
            f"   [dim][{src.index}] {where} (chunk {src.chunk_index}, score {src.score:.3f})[/]",
            highlight=False,
        )


def reindex(
    collection: Annotated[str, typer.Argument()],
    embedder: Annotated[str, typer.Option(help="Embedder to build the collection for.")],
) -> None:
    """Build COLLECTION for another embedder from the stored chunks (files are not re-read)."""
    s = settings()
    ctx = rag_context(s)
    provision_bases(ctx.registry, "embedder", [embedder])
    with progress_bar("Reindexing") as prog:
        task = prog.task_ids[0]
        build, n = run(
            lambda: svc.reindex_collection(
                ctx,
                collection,
                embedder,
                progress=lambda d, t: prog.update(task, completed=d, total=t),
                waiting=lambda: err_console.print(f"Waiting for another write to {collection}..."),
            )
        )
    console.print(f"{collection}: {n} chunks embedded with {build.embedder} ({build.embedder_fp})")


@collections_app.command("list")
def collections_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Collections with the embedders they are built for and their sizes."""
    infos = run(lambda: svc.list_collections(rag_context(settings())))
    rows = [
        {
            "collection": c.name,
            "embedder": b.embedder,
            "fingerprint": b.embedder_fp,
            "chunks": b.chunks,
            "stale": b.stale,
        }
        for c in infos
        for b in c.builds
    ]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    t = Table("collection", "embedder", "fingerprint", "chunks", "state")
    for r in rows:
        cells = [str(r[k]) for k in ("collection", "embedder", "fingerprint", "chunks")]
        t.add_row(*cells, "stale" if r["stale"] else "current")
    console.print(t)
    for r in rows:
        if r["stale"]:
            console.print(f"{r['collection']} ({r['embedder']}) is stale: {r['stale']}")


@collections_app.command("delete")
def collections_delete(
    name: Annotated[str, typer.Argument()],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a collection (every embedder's build of it)."""
    if not yes and not typer.confirm(f"Delete collection '{name}' and all its chunks?"):
        raise typer.Exit(1)
    n = run(lambda: svc.delete_collection(rag_context(settings()), name))
    console.print(f"Deleted {name} ({n} builds)." if n else f"No collection named {name}.")


def register(app: typer.Typer) -> None:
    for command in (ingest, ask, reindex):
        app.command()(command)
    app.add_typer(collections_app, name="collections")
