"""Console output: rich tables and progress, and one way to print failures."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from services.common.errors import TunestackError, disk_full_of

console = Console()
err_console = Console(stderr=True)


def fail(e: TunestackError | OSError | str, code: int = 1) -> NoReturn:
    """Print the failure (message, then hint) and exit with `code`; never a traceback. An
    OSError of a full disk is DiskFull naming its file's folder (context.run names it
    relative to TUNESTACK_HOME)."""
    if isinstance(e, OSError):
        e = disk_full_of(e) or TunestackError(str(e))
    if isinstance(e, TunestackError):
        err_console.print(f"[bold red]error:[/] {escape(e.message)}", highlight=False)
        if e.hint:
            err_console.print(f"[yellow]hint:[/] {escape(e.hint)}", highlight=False)
    else:
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)
    raise SystemExit(code)


@contextmanager
def progress_bar(description: str, total: int | None = None) -> Iterator[Progress]:
    """A progress bar on stderr; hidden when stderr is not a terminal."""
    prog = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[item]}", style="dim"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
        disable=not sys.stderr.isatty(),
    )
    with prog:
        prog.add_task(description, total=total, item="")
        yield prog
