"""`tunestack ask --compare A,B`: the same query ranked by several embedders, side by side.

Each column after the first shows how far a chunk moved against the first embedder's
ranking (looked up to 5x deeper than shown, so "new" means it was not even close).
"""

from __future__ import annotations

import json

from rich.table import Table

from platform_cli.output import console
from services.common.api_client import RagClient
from services.common.api_schemas import HitInfo, RetrieveRequest


def movement(rank: int, before: dict[str, int], chunk_id: str) -> str:
    old = before.get(chunk_id)
    if old is None:
        return "new"
    if old == rank:
        return "="
    return f"↑{old - rank}" if old > rank else f"↓{rank - old}"


def compare_rankings(
    client: RagClient,
    question: str,
    collection: str,
    embedders: list[str],
    mode: str,
    top_k: int,
    as_json: bool,
) -> None:
    embedders = [e.strip() for e in embedders if e.strip()]
    results: dict[str, list[HitInfo]] = {
        e: client.retrieve(
            RetrieveRequest(
                collection=collection,
                query=question,
                mode=mode,
                top_k=min(100, top_k * 5),
                embedder=e,
            )
        ).hits
        for e in embedders
    }
    base_rank = {h.id: h.rank for h in results[embedders[0]]}
    if as_json:
        out = {
            e: [
                {**h.model_dump(), "movement": movement(h.rank, base_rank, h.id)}
                for h in hits[:top_k]
            ]
            for e, hits in results.items()
        }
        console.print_json(json.dumps(out, ensure_ascii=False))
        return
    t = Table("rank", *embedders, title=f"{question!r} in {collection} ({mode})", show_lines=True)
    for r in range(top_k):
        cells = []
        for j, e in enumerate(embedders):
            hits = results[e]
            if r >= len(hits):
                cells.append("")
                continue
            h = hits[r]
            move = "" if j == 0 else f" [bold]{movement(h.rank, base_rank, h.id)}[/]"
            snippet = h.text[:90].replace("\n", " ")
            cells.append(f"{h.file_name}#{h.chunk_index} ({h.score:.3f}){move}\n[dim]{snippet}[/]")
        t.add_row(str(r + 1), *cells)
    console.print(t)
