"""`tunestack`: thin commands over the service libraries and the local/compose stack.

This module only assembles the command groups (platform_cli/commands/); each command
parses its arguments, calls the service layer, and prints.
"""

from __future__ import annotations

import sys

import typer

from platform_cli.commands import documents, embed, keys, llm, models, rag, stack
from platform_cli.context import run, settings
from platform_cli.stack.mode import delegate_job, job_service

app = typer.Typer(
    help="Tunestack: your documents -> a private, fine-tuned document Q&A stack.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
stack.register(app)
documents.register(app)
app.add_typer(models.app, name="models")
app.add_typer(llm.app, name="llm")
app.add_typer(embed.app, name="embed")
app.add_typer(rag.app, name="rag")
app.add_typer(keys.app, name="keys")


@app.callback()
def _main(ctx: typer.Context) -> None:
    # In docker mode, job commands re-run themselves inside their compose job container.
    argv = sys.argv[1:]
    if not argv or argv[0] != ctx.invoked_subcommand or job_service(argv) is None:
        return
    code = run(lambda: delegate_job(argv, settings()))
    if code is not None:
        raise typer.Exit(code)


if __name__ == "__main__":
    app()
