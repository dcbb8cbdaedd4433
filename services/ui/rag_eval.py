"""The Evaluate page's RAG tab: start `tunestack rag eval` as an API job, and read its
reports: the LLM x embedder x mode grid, the F1 heatmap, and each answer with the chunks it
cites and the gold answer highlighted in them.

Everything shown comes from the API (report.json and questions.jsonl through
/v1/reports); model output and chunk text are rendered inert (safe_markdown, or escaped
HTML with only our own <mark> and card markup).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from services.common.api_client import ApiError, RagClient
from services.common.api_schemas import RagEvalJobRequest, ReportDetail, ReportSummary
from services.ui.components import api_image, collections, follow_job, show_error
from services.ui.logic import (
    combo_label,
    highlight_html,
    html_text,
    llm_choices,
    md_escape,
    parse_jsonl,
    rag_grid_rows,
    rag_metric_names,
    safe_markdown,
)

JOB = "rag_job"
OPENED = "rag_report"
MODES = ["dense", "bm25", "hybrid"]


def _datasets(client: RagClient) -> list[str] | None:
    try:
        return [d.name for d in client.datasets().datasets]
    except ApiError as e:
        show_error(e, "Datasets are unavailable")
        return None


def _llms(client: RagClient) -> tuple[list[str], str]:
    try:
        serving = client.models(kind="llm").serving.llm_model
        models = client.served_models().data
    except ApiError:
        return [], ""
    return llm_choices(models, serving), serving


def run_form(client: RagClient) -> None:
    sets = _datasets(client)
    cols = collections(client)
    if sets is None or cols is None:
        return
    if not sets or not cols:
        st.info(
            "A RAG evaluation needs a registered dataset (SQuAD/CMRC JSON, EmbeddingQA JSON "
            "with answers, or JSONL; upload it on the Embedders tab or copy it into "
            "TUNESTACK_HOME/datasets/) and a collection holding its passages."
        )
        return
    c1, c2 = st.columns(2)
    dataset = c1.selectbox("Dataset", sets, key="rag_dataset")
    names = [c.name for c in cols]
    collection = c2.selectbox("Collection", names, key="rag_collection")
    builds = [b.embedder for b in next(c.builds for c in cols if c.name == collection)]
    llms, serving = _llms(client)
    chosen_llms = st.multiselect(
        "LLMs (served by the configured LLM servers)",
        llms,
        default=[serving] if serving in llms else llms[:1],
        max_selections=4,
        key="rag_llms",
    )
    c3, c4 = st.columns(2)
    chosen_emb = c3.multiselect(
        "Embedders (builds of the collection)",
        builds,
        default=builds[:1],
        max_selections=4,
        key="rag_embedders",
    )
    modes = c4.multiselect("Retrieval modes", MODES, default=["dense"], key="rag_modes")
    judge = st.selectbox(
        "LLM judge (grades correctness and groundedness; slow)",
        ["none", *llms],
        key="rag_judge",
    )
    c5, c6, c7, c8 = st.columns(4)
    top_k = c5.number_input("top k", 1, 20, 4, key="rag_k")
    max_tokens = c8.number_input(
        "Longest answer", 0, 2048, 0, key="rag_max_tokens", help="Tokens; 0: the API's own."
    )
    limit = c6.number_input("Questions (first N)", 1, 5000, 10, key="rag_limit")
    unanswerable = c7.number_input(
        "Add unanswerable",
        0,
        1000,
        0,
        key="rag_unans",
        help="Questions whose passage "
        "the collection lacks: the share answered 'not in the documents' is measured.",
    )
    combos = len(chosen_llms) * len(chosen_emb) * len(modes)
    st.caption(f"{combos} combinations x {int(limit)} questions (+ {int(unanswerable)}).")
    ready = bool(dataset and chosen_llms and chosen_emb and modes)
    if st.button(
        "Run RAG evaluation",
        type="primary",
        disabled=not ready,
        key="rag_run",
        icon=":material/play_arrow:",
    ):
        try:
            started = client.start_rag_eval(
                RagEvalJobRequest(
                    dataset=str(dataset),
                    collection=str(collection),
                    llms=list(chosen_llms),
                    embedders=list(chosen_emb),
                    modes=list(modes),
                    top_k=int(top_k),
                    max_tokens=int(max_tokens) or None,
                    limit=int(limit),
                    unanswerable=int(unanswerable),
                    judge=None if judge == "none" else str(judge),
                )
            )
        except ApiError as e:
            show_error(e, "Could not start the RAG evaluation")
            return
        st.session_state[JOB] = started
    job = st.session_state.get(JOB)
    if job:
        done = follow_job(client, job, f"Answering {md_escape(job.params.get('dataset', ''))}")
        st.session_state.pop(JOB, None)
        if done and done.status == "done" and done.result:
            st.session_state[OPENED] = done.result["report"]


def _questions(client: RagClient, rep: ReportDetail) -> list[dict[str, Any]]:
    f = next((f for f in rep.files if f.name == "questions.jsonl"), None)
    if f is None:
        return []
    try:
        return parse_jsonl(client.get_bytes(f.url, timeout=60))
    except ApiError as e:
        show_error(e, "The per-question answers are unavailable")
        return []


def _chunk_card(chunk: dict[str, Any], answers: list[str], cited: bool) -> str:
    border = "2px solid #2563eb" if cited else "1px solid rgba(128,128,128,.35)"
    gold = " · holds the answer" if chunk.get("gold") else ""
    label = f"[{chunk.get('rank')}] {chunk.get('file_name', '')}#{chunk.get('chunk_index', '')}"
    return (
        f'<div class="ts-rag-chunk" style="border:{border};border-radius:8px;'
        f'padding:6px 10px;margin-bottom:8px"><b>{html_text(label)}</b>'
        f'<span style="opacity:.7"> {"cited" if cited else "not cited"}{gold}</span>'
        f'<div style="font-size:.88em;line-height:1.35">'
        f"{highlight_html(str(chunk.get('text', '')), answers)}</div></div>"
    )


def drill_down(rows: list[dict[str, Any]], combos: list[str]) -> None:
    combo = st.selectbox("Combination", combos, key="rag_combo")
    mine = [r for r in rows if combo_label(r) == combo]
    if not mine:
        return
    labels = [f"{r.get('qid')}: {r.get('question', '')}"[:120] for r in mine]
    i = st.selectbox(
        "Question", range(len(mine)), format_func=lambda j: labels[j], key="rag_question"
    )
    r = mine[int(i or 0)]
    st.markdown(f"**Q:** {md_escape(str(r.get('question', '')))}")
    answers = [str(a) for a in r.get("answers") or []]
    st.markdown(
        "**Gold:** "
        + (" · ".join(md_escape(a) for a in answers) if answers else "—")
        + ("" if r.get("answerable") else "  \n*Not answerable from the collection.*")
    )
    st.markdown("**Answer:**")
    st.markdown(safe_markdown(str(r.get("answer", ""))))
    scores = {k: v for k, v in (r.get("scores") or {}).items() if v is not None}
    st.dataframe(pd.DataFrame([scores]), hide_index=True, width="stretch")
    cited = set(r.get("cited") or [])
    for chunk in r.get("retrieved") or []:
        st.markdown(_chunk_card(chunk, answers, chunk.get("rank") in cited), unsafe_allow_html=True)


def show_report(client: RagClient, name: str) -> None:
    try:
        rep = client.report(name)
    except ApiError as e:
        show_error(e, f"Report {md_escape(name)}")
        return
    body = rep.report
    st.markdown(
        f"**{md_escape(rep.name)}** · dataset {md_escape(str(body.get('dataset', '')))} · "
        f"collection {md_escape(str(body.get('collection', '')))} · "
        f"{md_escape(rep.created or '')}"
    )
    counts = body.get("counts") or {}
    if isinstance(counts, dict) and counts:
        st.caption(
            ", ".join(f"{v} {md_escape(str(k)).replace('_', ' ')}" for k, v in counts.items())
        )
    for note in body.get("notes") or []:
        st.info(md_escape(str(note)))
    grid = rag_grid_rows(body)
    top_k = int(body.get("top_k") or 4)
    judged = bool(body.get("judge"))
    st.caption(
        f"LLM judge: {md_escape(str(body['judge']))}" if judged else "No LLM judge was used."
    )
    st.dataframe(
        pd.DataFrame(grid),
        hide_index=True,
        width="stretch",
        column_config={
            m: st.column_config.NumberColumn(format="%.3f") for m in rag_metric_names(top_k, judged)
        },
    )
    png = next((f for f in rep.files if f.name == "f1_heatmap.png"), None)
    if png:
        api_image(client, png, caption="F1 over LLM x embedder")
    with st.expander("Answers, question by question", expanded=True):
        drill_down(_questions(client, rep), [combo_label(g) for g in grid])
    with st.expander("report.md"):
        st.markdown(safe_markdown(rep.markdown))


def history(client: RagClient) -> None:
    try:
        reports: list[ReportSummary] = [r for r in client.reports().reports if r.kind == "rag-eval"]
    except ApiError as e:
        show_error(e, "Reports are unavailable")
        return
    if not reports:
        st.caption("No RAG evaluation reports yet.")
        return
    names = [r.name for r in reports]
    if st.session_state.get(OPENED) not in names:
        st.session_state.pop(OPENED, None)
    name = st.selectbox("Open report", names, key=OPENED)
    show_report(client, name)


def render_tab(client: RagClient) -> None:
    with st.container(border=True):
        st.subheader("New RAG evaluation")
        run_form(client)
    st.subheader("RAG reports")
    history(client)
