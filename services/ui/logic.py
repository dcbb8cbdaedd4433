"""Pure helpers behind the pages: rank movement, shared-chunk colours, table rows.

Kept free of Streamlit so unit tests can check them directly; pages only lay out what
these functions compute. They take the API's own models (services.common.api_schemas), as
the client returns them.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from typing import Any

from services.common.api_schemas import HitInfo, IngestResponse, JobInfo, ModelCard

# Pastel backgrounds for chunks that appear in more than one column (readable on light
# and dark themes because the card text colour is set with them).
PALETTE = (
    "#fde68a",
    "#bfdbfe",
    "#bbf7d0",
    "#fbcfe8",
    "#ddd6fe",
    "#fed7aa",
    "#a5f3fc",
    "#e5e7eb",
    "#d9f99d",
    "#fecaca",
)
HEADLINE = ("hit@1", "hit@3", "hit@5", "hit@10", "mrr@10", "ndcg@10", "map@100")
LLM_OWNERS_HIDDEN = ("tunestack-rag", "tunestack-embedder")


def movement(rank: int, before: dict[str, int], chunk_id: str) -> str:
    """How far a chunk moved against the baseline ranking: ▲n, ▼n, = or new."""
    old = before.get(chunk_id)
    if old is None:
        return "new"
    if old == rank:
        return "="
    return f"▲{old - rank}" if old > rank else f"▼{rank - old}"


def movement_color(move: str) -> str:
    if move.startswith("▲") or move == "new":
        return "#15803d"
    if move.startswith("▼"):
        return "#b91c1c"
    return "#6b7280"


def shared_colors(columns: Sequence[Sequence[HitInfo]]) -> dict[str, str]:
    """A colour per chunk id shown in two or more columns, in order of first appearance."""
    seen: dict[str, int] = {}
    order: list[str] = []
    for hits in columns:
        for cid in dict.fromkeys(h.id for h in hits):
            if cid not in seen:
                order.append(cid)
            seen[cid] = seen.get(cid, 0) + 1
    shared = [cid for cid in order if seen[cid] > 1]
    return {cid: PALETTE[i % len(PALETTE)] for i, cid in enumerate(shared)}


def hit_label(hit: HitInfo) -> str:
    page = f" p.{hit.page}" if hit.page else ""
    return f"{hit.file_name}#{hit.chunk_index}{page}"


def hit_card_html(
    hit: HitInfo,
    move: str | None,
    color: str | None,
    highlighted: bool,
    snippet_chars: int = 180,
) -> str:
    """One ranked chunk as an HTML card (text escaped): rank, arrow, score, source, text."""
    text = hit.text
    snippet = text[:snippet_chars] + ("…" if len(text) > snippet_chars else "")
    bg = color or "transparent"
    border = "3px solid #dc2626" if highlighted else "1px solid rgba(128,128,128,.35)"
    fg = "color:#111827;" if color else ""
    arrow = (
        f'<span class="ts-move" style="color:{movement_color(move)};font-weight:700">{move}</span>'
        if move
        else ""
    )
    return (
        f'<div class="ts-hit" data-chunk="{html.escape(hit.id)}" '
        f'style="background:{bg};{fg}border:{border};border-radius:8px;'
        f'padding:6px 10px;margin-bottom:8px">'
        f'<div style="display:flex;justify-content:space-between;gap:8px">'
        f"<b>#{hit.rank} {html.escape(hit_label(hit))}</b>"
        f"<span>{arrow} <code>{hit.score:.3f}</code></span></div>"
        f'<div style="font-size:.88em;line-height:1.35">{html.escape(snippet)}</div></div>'
    )


def pick_pair(built: list[str], default_embedder: str, tuned: Iterable[str]) -> tuple[str, str]:
    """Default base (left) and tuned (right) embedders among a collection's builds."""
    if not built:
        return "", ""
    base = default_embedder if default_embedder in built else built[0]
    others = [b for b in built if b != base]
    tuned_set = set(tuned)
    right = next((b for b in others if b in tuned_set), others[0] if others else base)
    return base, right


def metric_rows(
    models: dict[str, dict[str, float]], metrics: Sequence[str] = HEADLINE
) -> list[dict[str, Any]]:
    """Table rows (one per model) with the metrics every model has."""
    cols = [m for m in metrics if any(m in v for v in models.values())]
    return [{"model": name, **{m: vals.get(m) for m in cols}} for name, vals in models.items()]


def chart_rows(
    models: dict[str, dict[str, float]], metrics: Sequence[str] = HEADLINE
) -> list[dict[str, Any]]:
    """Long-format rows (model, metric, value) for a grouped bar chart."""
    return [
        {"model": name, "metric": m, "value": float(vals[m])}
        for name, vals in models.items()
        for m in metrics
        if isinstance(vals.get(m), int | float)
    ]


def human_size(n: Any) -> str:
    if not isinstance(n, int | float):
        return "—"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def flat_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'loss': 1}} -> {'train.loss': 1}: one table for nested metric dicts."""
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_metrics(v, key + "."))
        elif isinstance(v, int | float | str | bool) or v is None:
            out[key] = v
    return out


def llm_choices(models: Sequence[ModelCard], serving: str) -> list[str]:
    """LLMs the server can answer with, the deployed one first."""
    names = [m.id for m in models if m.id and m.owned_by not in LLM_OWNERS_HIDDEN]
    return list(dict.fromkeys([serving, *names])) if serving else list(dict.fromkeys(names))


def ingest_rows(report: IngestResponse) -> list[dict[str, Any]]:
    """One table row per file of an ingest answer."""
    return [
        {"file": f.path, "status": f.status, "chunks": f.chunks, "reason": f.reason}
        for f in report.files
    ]


def job_text(job: JobInfo) -> str:
    count = f" ({job.done}/{job.total})" if job.total else ""
    return f"{job.message}{count}"


_BLOCK_MARKUP = re.compile(r"^(\s{0,3}\d*)([#>]|[-*+] |[.)] |={3,}|-{3,})", re.MULTILINE)


def quoted_chunk(text: str) -> str:
    """A chunk shown as Markdown without its block markup taking over the card.

    Chunks are cut from the user's files: a "# Warranty" line would render as a page-sized
    heading and a "---" line as a rule. Escaping the line-start markers keeps the words,
    inline emphasis and wrapping.
    """
    return _BLOCK_MARKUP.sub(lambda m: m.group(1) + "\\" + m.group(2), text)
