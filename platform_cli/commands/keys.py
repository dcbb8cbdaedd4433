"""`tunestack keys create|list|revoke`: the RAG API's keys (TUNESTACK_HOME/keys.json).

The API reads the same file and notices changes, so a new key works and a revoked one
stops working without a restart. The token is printed once; only its hash is kept.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from platform_cli.context import run, settings
from platform_cli.output import console, err_console
from services.common.auth import KeyStore

app = typer.Typer(help="API keys and their roles (user | admin).", no_args_is_help=True)


def _store() -> KeyStore:
    return KeyStore(settings().home_dir)


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Who or what uses the key, e.g. alice, ui-bot.")],
    role: Annotated[str, typer.Option(help="user (ask, retrieve) | admin (also change).")] = "user",
) -> None:
    """Create a key and print its token (shown once: store it now)."""
    rec, token = run(lambda: _store().create(name, role))  # type: ignore[arg-type]
    err_console.print(f"Created {rec.role} key '{rec.name}' (id {rec.id}). Token, shown once:")
    console.print(token, highlight=False, soft_wrap=True)


@app.command("list")
def list_keys(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Keys with their ids, roles and whether they are revoked (never the tokens)."""
    keys = run(lambda: _store().list())
    if as_json:
        rows = [{k: v for k, v in asdict(r).items() if k != "sha256"} for r in keys]
        console.print_json(json.dumps(rows))
        return
    t = Table("id", "name", "role", "created", "revoked")
    for r in keys:
        t.add_row(r.id, r.name, r.role, r.created, r.revoked or "-")
    console.print(t)


@app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The id from `tunestack keys list`.")],
) -> None:
    """Revoke a key: the API refuses it from its next request on."""
    rec = run(lambda: _store().revoke(key_id))
    console.print(f"Revoked key '{rec.name}' (id {rec.id}).")
