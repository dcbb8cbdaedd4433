"""`tunestack`: thin commands over the service libraries and the local/compose stack."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from platform_cli.cmd_convert import register as register_convert
from platform_cli.cmd_embed import embed_app
from platform_cli.cmd_llm import llm_app
from platform_cli.local_stack import ORDER, LocalStack
from platform_cli.output import console, err_console, fail, progress_bar
from platform_cli.settings import StackSettings
from services.common.errors import ServiceUnavailable, TunestackError
from services.common.logs import quiet_libraries
from services.common.registry import Registry

app = typer.Typer(
    help="Tunestack: your documents -> a private, fine-tuned document Q&A stack.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = typer.Typer(help="The model registry (TUNESTACK_HOME/models).", no_args_is_help=True)
collections_app = typer.Typer(help="Collections in the vector store.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(collections_app, name="collections")
register_convert(llm_app)  # tunestack llm export|deploy
app.add_typer(llm_app, name="llm")
app.add_typer(embed_app, name="embed")


def settings() -> StackSettings:
    quiet_libraries()
    return StackSettings()


def _run(fn: Any) -> Any:
    try:
        return fn()
    except TunestackError as e:
        fail(e)


def _resolve_mode(mode: str) -> str:
    from platform_cli.stack_mode import resolve_up_mode

    return str(_run(lambda: resolve_up_mode(mode)))


def _active_mode(mode: str | None) -> str:
    from platform_cli.stack_mode import active_mode

    return str(_run(lambda: active_mode(settings(), mode)))


@app.callback()
def _main(ctx: typer.Context) -> None:
    # In docker mode, job commands re-run themselves inside their compose job container.
    from platform_cli.stack_mode import delegate_job, job_service

    argv = sys.argv[1:]
    if not argv or argv[0] != ctx.invoked_subcommand or job_service(argv) is None:
        return
    code = _run(lambda: delegate_job(argv, settings()))
    if code is not None:
        raise typer.Exit(code)


# ---- stack --------------------------------------------------------------------------

ModeOption = Annotated[
    str | None, typer.Option("--mode", help="auto | local | docker (default: the running stack)")
]


@app.command()
def up(
    mode: Annotated[
        str | None, typer.Option(help="auto | local | docker (default: TUNESTACK_MODE, auto)")
    ] = None,
    llm: Annotated[
        str | None, typer.Option(help="Docker mode LLM server: ollama | llamacpp.")
    ] = None,
    gpu: Annotated[bool, typer.Option("--gpu", help="Docker mode: use NVIDIA GPUs.")] = False,
    build: Annotated[bool, typer.Option("--build", help="Docker mode: rebuild images.")] = False,
    no_ui: Annotated[bool, typer.Option("--no-ui", help="Do not start the Streamlit UI.")] = False,
) -> None:
    """Start the stack: Chroma, the LLM server, the RAG API and the UI."""
    s = settings()
    if _resolve_mode(mode or s.mode) == "docker":
        from platform_cli.docker_stack import DockerStack
        from platform_cli.stack_mode import local_running

        if local_running(s):
            fail(
                TunestackError(
                    "The local stack is running; the docker stack needs the same ports.",
                    hint="Stop it first (tunestack down --mode local), or keep it: --mode local.",
                )
            )
        server = llm or s.llm_server
        dstack = DockerStack(s, gpu=gpu)
        _run(
            lambda: dstack.up(
                server, lambda msg: console.print(f"  {msg}"), ui=not no_ui, build=build
            )
        )
        console.print(f"[green]Stack is up (docker, {server}).[/] API {s.api_url}  UI {s.ui_url}")
        return
    if llm == "ollama" or gpu:
        fail(
            TunestackError(
                "Local mode runs llama.cpp on the CPU; --llm ollama and --gpu need docker mode.",
                hint="Start Docker and use --mode docker, or point TUNESTACK_RAG_LLM_BASE_URL "
                "at an Ollama you run yourself (http://127.0.0.1:11434/v1).",
            )
        )
    stack = LocalStack(s)

    def go() -> None:
        from services.converter.servable import servable_gguf

        registry = Registry(s.home_dir)
        with console.status("Preparing models (first run converts the base LLM to f16)..."):
            _, gguf = servable_gguf(registry, s.default_llm)
            registry.get("embedder", s.default_embedder)
        from platform_cli.deploy_local import served_model

        deployed = served_model(s)  # `tunestack llm deploy --to llamacpp` survives restarts
        alias = None
        if deployed is not None:
            gguf, alias = deployed
        services = [n for n in ORDER if not (no_ui and n == "ui")]
        stack.up(
            services, lambda msg: console.print(f"  {msg}"), llm_model_path=gguf, llm_alias=alias
        )

    _run(go)
    console.print(f"[green]Stack is up.[/] API {s.api_url}  UI {s.ui_url}")


@app.command()
def down(
    mode: ModeOption = None,
    volumes: Annotated[
        bool, typer.Option("--volumes", "-v", help="Docker mode: also delete the volumes.")
    ] = False,
) -> None:
    """Stop the stack started by `tunestack up` (docker services or local processes)."""
    if _active_mode(mode) == "docker":
        from platform_cli.docker_stack import DockerStack

        _run(lambda: DockerStack(settings()).down(volumes=volumes))
        console.print(
            "Stopped the docker stack" + (" and deleted its volumes." if volumes else ".")
        )
        return
    stopped = LocalStack(settings()).down()
    console.print("Stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json")] = False, mode: ModeOption = None
) -> None:
    """Health of each service with its URL."""
    if _active_mode(mode) == "docker":
        from platform_cli.docker_stack import DockerStack

        drows = _run(lambda: DockerStack(settings()).status())
        if as_json:
            console.print_json(
                json.dumps(
                    [
                        {
                            "service": r.name,
                            "state": r.state,
                            "url": r.url,
                            "mode": "docker",
                            "compose_service": r.service,
                            "container": r.container,
                        }
                        for r in drows
                    ]
                )
            )
            return
        t = Table("service", "state", "url", "container")
        for r in drows:
            color = {"healthy": "green", "stopped": "dim"}.get(r.state, "yellow")
            t.add_row(r.name, f"[{color}]{r.state}[/]", r.url, r.container or "-")
        console.print(t)
        return
    rows = LocalStack(settings()).status()
    if as_json:
        console.print_json(
            json.dumps(
                [
                    {
                        "service": r.name,
                        "state": r.state,
                        "url": r.url,
                        "pid": r.pid,
                        "log": str(r.log),
                    }
                    for r in rows
                ]
            )
        )
        return
    t = Table("service", "state", "url", "pid", "log")
    for r in rows:
        color = {"healthy": "green", "stopped": "dim"}.get(r.state, "yellow")
        t.add_row(r.name, f"[{color}]{r.state}[/]", r.url, str(r.pid or "-"), str(r.log))
    console.print(t)


@app.command()
def logs(
    service: Annotated[
        str, typer.Argument(help="chroma | llm | rag-api | ui (docker: any service)")
    ],
    follow: Annotated[bool, typer.Option("-f", "--follow")] = False,
    lines: Annotated[int, typer.Option("-n")] = 50,
    mode: ModeOption = None,
) -> None:
    """Show a service's log."""
    if _active_mode(mode) == "docker":
        from platform_cli.docker_stack import DockerStack

        raise typer.Exit(_run(lambda: DockerStack(settings()).logs(service, follow, lines)))
    if service not in ORDER:
        fail(TunestackError(f"Unknown service '{service}'.", hint="One of: " + ", ".join(ORDER)))
    path = LocalStack(settings()).log_dir / f"{service}.log"
    if not path.exists():
        fail(TunestackError(f"No log yet at {path}.", hint="Start the stack: tunestack up"))
    if follow:
        os.execvp("tail", ["tail", "-n", str(lines), "-f", str(path)])
    console.print(LocalStack(settings()).log_tail(service, lines), highlight=False, markup=False)


# ---- documents ------------------------------------------------------------------------


@app.command()
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
    from services.rag_api.ingest import Ingestor
    from services.rag_api.settings import RagSettings
    from services.rag_api.store import VectorStore, validate_collection_name

    s = settings()
    rag = RagSettings()

    def go() -> Any:
        validate_collection_name(collection)
        store = VectorStore(s.chroma_url)
        if not store.heartbeat():
            raise ServiceUnavailable(
                "chroma",
                f"Chroma is not running at {s.chroma_url}.",
                hint="Start the stack first: tunestack up",
            )
        from services.common.embedders import EmbedderPool

        with console.status("Loading embedder..."):
            emb = EmbedderPool(Registry(s.home_dir), precision=s.embed_precision).get(
                embedder or s.default_embedder
            )
        ing = Ingestor(
            store,
            emb,
            chunk_size=chunk_size or rag.chunk_size,
            chunk_overlap=rag.chunk_overlap if chunk_overlap is None else chunk_overlap,
            max_file_bytes=rag.max_file_mb * 2**20,
        )
        with progress_bar("Ingesting") as prog:
            task = prog.task_ids[0]

            def tick(item: str, done: int, total: int) -> None:
                prog.update(task, completed=done, total=total, item=item)

            return ing.ingest(paths, collection, prune=prune, progress=tick)

    report = _run(go)
    if as_json:
        console.print_json(json.dumps(report.to_dict(), ensure_ascii=False))
        return
    t = Table("file", "status", "chunks", "reason")
    colors = {"ok": "green", "unchanged": "dim", "failed": "red", "removed": "yellow"}
    for f in report.files:
        t.add_row(
            f.path, f"[{colors.get(f.status, 'white')}]{f.status}[/]", str(f.chunks), f.reason
        )
    console.print(t)
    counts = ", ".join(f"{v} {k}" for k, v in sorted(report.counts.items()))
    console.print(
        f"{collection}: {counts}; {report.chunks_written} chunks written "
        f"in {report.seconds:.1f}s (embedder {report.embedder})"
    )
    if report.counts.get("failed"):
        raise typer.Exit(2)


@app.command()
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
    if compare:
        from platform_cli.compare import compare_rankings

        _run(
            lambda: compare_rankings(
                s, question, collection, compare.split(","), mode, top_k, as_json, api_post
            )
        )
        return
    body: dict[str, Any] = {
        "model": f"rag/{collection}",
        "messages": [{"role": "user", "content": question}],
        "top_k": top_k,
        "retrieval_mode": mode,
    }
    if embedder:
        body["embedder"] = embedder
    data = _run(lambda: api_post(s, "/v1/chat/completions", body))
    if as_json:
        console.print_json(json.dumps(data, ensure_ascii=False))
        return
    console.print(f"[bold]Q:[/] {question}", highlight=False)
    console.print(f"[bold]A:[/] {data['choices'][0]['message']['content']}", highlight=False)
    for src in data.get("sources", []):
        where = src["file_name"] + (f" p.{src['page']}" if src.get("page") else "")
        console.print(
            f"   [dim][{src['index']}] {where} (chunk {src['chunk_index']}, "
            f"score {src['score']:.3f})[/]",
            highlight=False,
        )


def api_post(s: StackSettings, path: str, body: dict[str, Any], timeout: float = 300) -> Any:
    key = os.environ.get("TUNESTACK_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        r = httpx.post(s.api_url + path, json=body, headers=headers, timeout=timeout)
    except httpx.HTTPError as e:
        raise ServiceUnavailable(
            "rag-api",
            f"The RAG API is not reachable at {s.api_url} ({type(e).__name__}).",
            hint="Start the stack: tunestack up",
        ) from e
    if r.status_code >= 400:
        try:
            err = r.json()
        except ValueError:
            err = {"message": r.text}
        raise TunestackError(
            str(err.get("message") or err.get("detail") or err), hint=err.get("hint")
        )
    return r.json()


@app.command()
def reindex(
    collection: Annotated[str, typer.Argument()],
    embedder: Annotated[str, typer.Option(help="Embedder to build the collection for.")],
) -> None:
    """Build COLLECTION for another embedder from the stored chunks (files are not re-read)."""
    from services.common.embedders import EmbedderPool
    from services.rag_api.reindex import reindex as do_reindex
    from services.rag_api.store import VectorStore

    s = settings()

    def go() -> Any:
        store = VectorStore(s.chroma_url)
        emb = EmbedderPool(Registry(s.home_dir), precision=s.embed_precision).get(embedder)
        with progress_bar("Reindexing") as prog:
            task = prog.task_ids[0]
            return do_reindex(
                store,
                collection,
                emb,
                s.default_embedder,
                progress=lambda d, t: prog.update(task, completed=d, total=t),
            )

    build, n = _run(go)
    console.print(f"{collection}: {n} chunks embedded with {build.embedder} ({build.embedder_fp})")


@collections_app.command("list")
def collections_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Collections with the embedders they are built for and their sizes."""
    from services.rag_api.store import VectorStore

    store = VectorStore(settings().chroma_url)
    builds = _run(store.builds)
    rows = [
        {
            "collection": b.name,
            "embedder": b.embedder,
            "fingerprint": b.embedder_fp,
            "chunks": _run(lambda b=b: store.count(b)),
        }
        for b in builds
    ]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    t = Table("collection", "embedder", "fingerprint", "chunks")
    for r in rows:
        t.add_row(r["collection"], r["embedder"], r["fingerprint"], str(r["chunks"]))
    console.print(t)


@collections_app.command("delete")
def collections_delete(
    name: Annotated[str, typer.Argument()],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a collection (every embedder's build of it)."""
    from services.rag_api.store import VectorStore

    if not yes and not typer.confirm(f"Delete collection '{name}' and all its chunks?"):
        raise typer.Exit(1)
    n = _run(lambda: VectorStore(settings().chroma_url).delete(name))
    console.print(f"Deleted {name} ({n} builds)." if n else f"No collection named {name}.")


# ---- models ---------------------------------------------------------------------------


@models_app.command("list")
def models_list(
    kind: Annotated[str | None, typer.Option(help="llm | embedder")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Registered models (base models are provisioned on first use)."""
    if kind not in (None, "llm", "embedder"):
        fail(TunestackError(f"Unknown kind '{kind}'.", hint="Use llm or embedder."))
    entries = Registry(settings().home_dir).entries(kind)  # type: ignore[arg-type]
    if as_json:
        console.print_json(
            json.dumps([{"kind": e.kind, "name": e.name, **e.meta} for e in entries], default=str)
        )
        return
    t = Table("kind", "name", "base", "source / status", "fingerprint")
    for e in entries:
        t.add_row(
            e.kind,
            e.name,
            str(e.meta.get("base_model") or "-"),
            str(e.meta.get("source") or e.meta.get("status", "")),
            e.fingerprint or "-",
        )
    console.print(t)


@app.command()
def doctor() -> None:
    """Check Python, disk, Docker, GPU, models and ports; say what to fix."""
    from platform_cli.doctor import run_checks

    s = settings()
    ok = True
    t = Table("check", "result", "detail")
    for c in run_checks(s):
        ok = ok and c.ok is not False
        mark = {True: "[green]ok[/]", False: "[red]problem[/]", None: "[yellow]note[/]"}[c.ok]
        t.add_row(c.name, mark, c.detail)
    console.print(t)
    if not ok:
        err_console.print("[red]Some checks failed; see the details above.[/]")
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
