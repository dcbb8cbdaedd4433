"""`tunestack up|down|status|logs|doctor|worker`: the stack, whichever mode runs it.

Each command opens the stack it addresses (platform_cli.stack.open_stack) and calls the
`Stack` interface; what differs between local processes and compose services lives there.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from platform_cli.context import run, settings
from platform_cli.output import console, err_console
from platform_cli.stack import Stack, UpOptions, open_stack, resolve_up_mode
from platform_cli.stack.doctor import run_checks

ModeOption = Annotated[
    str | None, typer.Option("--mode", help="auto | local | docker (default: the running stack)")
]
STATE_COLORS = {"healthy": "green", "stopped": "dim"}


def _stack(mode: str | None) -> Stack:
    s = settings()
    return run(lambda: open_stack(s, mode))


def _cell(value: Any) -> str:
    return "-" if value in (None, "") else str(value)


def up(
    mode: Annotated[
        str | None, typer.Option(help="auto | local | docker (default: TUNESTACK_MODE, auto)")
    ] = None,
    llm: Annotated[
        str | None,
        typer.Option(help="Docker mode LLM server: ollama | llamacpp | vllm (with --gpu)."),
    ] = None,
    gpu: Annotated[bool, typer.Option("--gpu", help="Docker mode: use NVIDIA GPUs.")] = False,
    build: Annotated[bool, typer.Option("--build", help="Docker mode: rebuild images.")] = False,
    no_ui: Annotated[bool, typer.Option("--no-ui", help="Do not start the Streamlit UI.")] = False,
) -> None:
    """Start the stack: Chroma, the LLM server, the RAG API and the UI."""
    s = settings()
    stack = run(lambda: open_stack(s, resolve_up_mode(mode or s.mode)))
    options = UpOptions(llm=llm, gpu=gpu, build=build, ui=not no_ui)
    run(lambda: stack.up(options, lambda msg: console.print(f"  {msg}")))
    console.print(f"[green]Stack is up ({stack.mode}).[/] API {s.api_url}  UI {s.ui_url}")


def down(
    mode: ModeOption = None,
    volumes: Annotated[
        bool, typer.Option("--volumes", "-v", help="Docker mode: also delete the volumes.")
    ] = False,
) -> None:
    """Stop the stack started by `tunestack up` (docker services or local processes)."""
    stack = _stack(mode)
    stopped = run(lambda: stack.down(volumes=volumes))
    console.print("Stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


def status(
    as_json: Annotated[bool, typer.Option("--json")] = False, mode: ModeOption = None
) -> None:
    """Health of each service with its URL."""
    stack = _stack(mode)
    rows = run(stack.status)
    if as_json:
        out = [
            {"service": r.name, "state": r.state, "url": r.url, "mode": stack.mode, **r.details}
            for r in rows
        ]
        console.print_json(json.dumps(out))
        return
    t = Table("service", "state", "url", *stack.detail_columns)
    for r in rows:
        color = STATE_COLORS.get(r.state, "yellow")
        extra = [_cell(r.details.get(c)) for c in stack.detail_columns]
        t.add_row(r.name, f"[{color}]{r.state}[/]", r.url, *extra)
    console.print(t)


def logs(
    service: Annotated[
        str, typer.Argument(help="chroma | llm | rag-api | ui (docker: any service)")
    ],
    follow: Annotated[bool, typer.Option("-f", "--follow")] = False,
    lines: Annotated[int, typer.Option("-n")] = 50,
    mode: ModeOption = None,
) -> None:
    """Show a service's log."""
    stack = _stack(mode)
    raise typer.Exit(run(lambda: stack.logs(service, follow, lines)))


def doctor() -> None:
    """Check Python, disk, the LLM engine, Docker, GPU, models and ports; say what to fix."""
    ok = True
    t = Table("check", "result", "detail")
    for c in run_checks(settings()):
        ok = ok and c.ok is not False
        mark = {True: "[green]ok[/]", False: "[red]problem[/]", None: "[yellow]note[/]"}[c.ok]
        t.add_row(c.name, mark, c.detail)
    console.print(t)
    if not ok:
        err_console.print("[red]Some checks failed; see the details above.[/]")
        raise typer.Exit(1)


def worker(
    queues: Annotated[
        list[str] | None,
        typer.Option(
            "--queues",
            help="jobs (eval, rag-eval, ingest, reindex, deploy) and/or train (embed tune, "
            "llm train); default: every queue this install can run",
        ),
    ] = None,
) -> None:
    """Run the API's queued jobs from TUNESTACK_QUEUE_URL.

    Start one or more beside an API that has TUNESTACK_QUEUE_URL set (same TUNESTACK_HOME,
    Chroma and LLM server). Without that variable the API runs its jobs itself and no
    worker is needed. Tuning and training jobs wait on a queue of their own for a worker
    with the training libraries (`make setup`, or the jobs image). Ctrl-C lets the running
    job finish; a second Ctrl-C stops it (the queue runs it again on another worker)."""
    from services.rag_api.job_worker import main as work  # torch, rq: only for this command

    raise typer.Exit(work(queues))


def register(app: typer.Typer) -> None:
    for command in (up, down, status, logs, doctor, worker):
        app.command()(command)
