"""Checks a job's inputs before it is queued, so a typo is a 404 at once."""

from __future__ import annotations

from services.common.errors import NotFound
from services.rag_api.context import RagContext
from services.rag_api.store import validate_collection_name


def registered_embedders(ctx: RagContext, names: list[str]) -> list[str]:
    """The names, stripped and de-duplicated, all registered (else 404 listing them)."""
    have = [e.name for e in ctx.registry.entries("embedder") if e.provisioned]
    unique = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    missing = [n for n in unique if n not in have]
    if missing or not unique:
        raise NotFound(
            f"Not registered: {', '.join(missing) or '(no model given)'}.",
            hint="Registered embedders: " + ", ".join(have),
        )
    return unique


def existing_collection(ctx: RagContext, name: str) -> None:
    validate_collection_name(name)
    if not ctx.store.builds(name):
        raise NotFound(
            f"Collection '{name}' does not exist.",
            hint="GET /v1/collections lists them.",
        )
