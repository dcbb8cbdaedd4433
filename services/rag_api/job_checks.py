"""Checks a job's inputs before it is queued, so a typo is a 404 at once."""

from __future__ import annotations

from services.common.errors import EmbedderMismatch, NotFound
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


def built_embedders(ctx: RagContext, collection: str, names: list[str]) -> list[str]:
    """`names`, de-duplicated, each with a build of the collection (else 409 with the
    reindex command); an empty list stays empty (the collection's default build)."""
    existing_collection(ctx, collection)
    have = [b.embedder for b in ctx.store.builds(collection)]
    names = list(dict.fromkeys(names))
    missing = [n for n in names if n not in have]
    if missing:
        raise EmbedderMismatch(
            f"Collection '{collection}' has no build for {', '.join(missing)} "
            f"(built for {', '.join(have)}).",
            hint=f"Reindex it first: POST /v1/jobs/reindex, or `tunestack reindex {collection} "
            f"--embedder {missing[0]}`.",
        )
    return names
