"""Compare retrieval: one query ranked by two embedders (base vs tuned), side by side.

The right-hand columns show how far each chunk moved against the left (base) column;
the base ranking is fetched five times deeper than shown so "new" means the chunk was
not even close before. A chunk present in several columns gets the same colour in each,
and the "Highlight" picker outlines one chunk everywhere it appears.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from services.common.api_client import ApiError, RagClient
from services.common.api_schemas import (
    HitInfo,
    ReindexJobRequest,
    RetrieveRequest,
    RetrieveResponse,
)
from services.ui.components import (
    collections,
    embedders,
    get_client,
    is_admin,
    linked_index,
    readiness,
    show_error,
    start_job,
)
from services.ui.logic import (
    hit_card_html,
    hit_label,
    html_text,
    md_escape,
    movement,
    pick_pair,
    shared_colors,
)

RESULTS = "compare_results"


def retrieve(
    client: RagClient,
    collection: str,
    query: str,
    embedder: str | None,
    mode: str,
    k: int,
) -> RetrieveResponse:
    req = RetrieveRequest(
        collection=collection, query=query, top_k=k, mode=mode, embedder=embedder or None
    )
    return client.retrieve(req, timeout=60)


def offer_reindex(client: RagClient, collection: str, built: list[str]) -> None:
    """A collection built for one embedder only: offer to build it for another."""
    reg = embedders(client)
    if reg is None:
        return
    others = [m.name for m in reg[0] if m.name not in built]
    st.info(
        f"'{md_escape(collection)}' is built for {md_escape(', '.join(built))} only. Build it "
        "for another embedder to compare (the stored chunks are re-embedded; files are not "
        "re-read)."
    )
    if not is_admin():
        st.caption("Building it needs an admin key: ask an admin (Documents → Reindex).")
        return
    if not others:
        st.caption("No other embedder is registered: tune one with `tunestack embed tune`.")
        return
    target = st.selectbox("Embedder to add", others, key="cmp_reindex_to")
    if st.button("Build it", key="cmp_reindex", icon=":material/build:"):
        job = start_job(
            client,
            "reindex",
            lambda: client.start_reindex(ReindexJobRequest(collection=collection, embedder=target)),
            f"Building '{md_escape(collection)}' for {md_escape(target)}",
        )
        if job and job.status == "done":
            st.rerun()


def column(
    title: str,
    hits: list[HitInfo],
    base_rank: dict[str, int] | None,
    colors: dict[str, str],
    highlight: str | None,
) -> None:
    st.markdown(f"**{md_escape(title)}**")
    if not hits:
        st.caption("No chunks matched.")
    cards = [
        hit_card_html(
            h,
            movement(h.rank, base_rank, h.id) if base_rank is not None else None,
            colors.get(h.id),
            h.id == highlight,
        )
        for h in hits
    ]
    st.markdown(
        f'<div class="ts-column" data-title="{html_text(title)}">' + "".join(cards) + "</div>",
        unsafe_allow_html=True,
    )


def render() -> None:
    client = get_client()
    st.title("Compare retrieval")
    if not readiness(client)["chroma"]:
        return
    cols = collections(client)
    if cols is None:
        return
    if not cols:
        st.info("No collections yet: upload documents on the Documents page.")
        return
    reg = embedders(client)
    if reg is None:
        return
    models, serving = reg
    tuned = [m.name for m in models if m.base_model]

    c1, c2, c3, c4 = st.columns([2, 2, 2, 2])
    names = [c.name for c in cols]
    collection = c1.selectbox("Collection", names, index=linked_index(names), key="cmp_collection")
    built = [b.embedder for b in next(c.builds for c in cols if c.name == collection)]
    base, right = pick_pair(built, serving.default_embedder, tuned)
    if st.session_state.get("cmp_for") != collection or any(
        st.session_state.get(k) not in built for k in ("cmp_left", "cmp_right")
    ):
        # another collection: its own default pair, not the columns kept from the last one
        st.session_state["cmp_for"] = collection
        st.session_state["cmp_left"], st.session_state["cmp_right"] = base, right
    left_emb = c2.selectbox("Base (left)", built, key="cmp_left")
    right_emb = c3.selectbox("Tuned (right)", built, key="cmp_right")
    extra = c4.selectbox("Third column", ["none", "bm25", "hybrid"], key="cmp_extra")
    if len(built) < 2:
        offer_reindex(client, collection, built)

    with st.form("cmp_form", border=False):
        q1, q2, q3 = st.columns([5, 1, 1.4], vertical_alignment="bottom")
        query = q1.text_input("Query", key="cmp_query", placeholder="Ask a question…")
        top_k = q2.number_input("Top k", 1, 20, 5, key="cmp_k")
        go = q3.form_submit_button("Compare", type="primary", icon=":material/search:")
    if go and query.strip():
        try:  # the API loads an embedder on its first query (seconds), hence the spinner
            with st.spinner("Retrieving…"):
                left = retrieve(client, collection, query, left_emb, "dense", min(100, top_k * 5))
                rres = retrieve(client, collection, query, right_emb, "dense", top_k)
                third = (
                    retrieve(client, collection, query, left_emb, extra, top_k)
                    if extra != "none"
                    else None
                )
        except ApiError as e:
            show_error(e, "Retrieval failed")
            return
        st.session_state[RESULTS] = {
            "key": (collection, query, left_emb, right_emb, extra, top_k),
            "left": left,
            "right": rres,
            "third": third,
        }
    res = st.session_state.get(RESULTS)
    if not res or res["key"][0] != collection:
        st.caption("Enter a query and press Compare.")
        return
    show_results(res, int(res["key"][5]))


def show_results(res: dict[str, Any], top_k: int) -> None:
    left: list[HitInfo] = res["left"].hits
    shown = [left[:top_k], res["right"].hits]
    if res["third"]:
        shown.append(res["third"].hits)
    base_rank = {h.id: h.rank for h in left}
    colors = shared_colors(shown)
    labels = {h.id: f"#{h.rank} {hit_label(h)}" for h in shown[0]}
    for hits in shown[1:]:
        for h in hits:
            labels.setdefault(h.id, hit_label(h))
    highlight = st.selectbox(
        "Highlight a chunk in every column",
        ["(none)", *labels],
        format_func=lambda cid: labels.get(cid, cid),
        key="cmp_highlight",
    )
    target = None if highlight == "(none)" else highlight
    overlap = len(set(h.id for h in shown[0]) & set(h.id for h in shown[1]))
    st.caption(
        f"{overlap} of {len(shown[1])} chunks in both dense columns · coloured cards appear "
        "in more than one column · ▲/▼ rank change vs base · new = not in base's top "
        f"{len(left)}"
    )
    grid = st.columns(len(shown))
    k = res["key"]
    with grid[0]:
        column(f"{k[2]} (base) · {res['left'].took_ms:.0f} ms", shown[0], None, colors, target)
    with grid[1]:
        column(f"{k[3]} · {res['right'].took_ms:.0f} ms", shown[1], base_rank, colors, target)
    if res["third"]:
        with grid[2]:
            column(f"{k[4]} ({k[2]})", shown[2], base_rank, colors, target)


if __name__ == "__main__":
    render()
