"""Evaluate: retrieval metrics of base vs tuned embedders on a QA dataset (Embedders tab),
and the RAG answers of LLM x embedder x mode (RAG tab, services.ui.rag_eval), with past
reports of each.

Each evaluation runs as an API job (the same code as `tunestack embed eval` / `tunestack
rag eval`, writing the same report folder), so the page only starts it, shows its progress
and reads the report back; reports made from the CLI show up in the history too.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from services.common.api_client import ApiError, RagClient
from services.common.api_schemas import EvalJobRequest, JobInfo, ReportSummary
from services.ui.components import (
    api_image,
    embedders,
    follow_job,
    get_client,
    require_admin,
    show_error,
)
from services.ui.logic import HEADLINE, chart_rows, md_escape, metric_rows, safe_markdown
from services.ui.rag_eval import render_tab as rag_tab

JOB = "eval_job"
OPENED = "eval_report"


def choose_dataset(client: RagClient) -> str | None:
    source = st.radio("Dataset", ["Registered", "Upload"], horizontal=True, key="eval_source")
    if source == "Upload":
        up = st.file_uploader(
            "EmbeddingQAFinetuneDataset or SQuAD JSON", type=["json"], key="eval_upload"
        )
        if up is not None and st.button("Upload dataset", key="eval_upload_btn"):
            try:
                with st.spinner(f"Checking {up.name}…"):
                    ds = client.upload_dataset(up.name, up.getvalue())
            except ApiError as e:
                show_error(e, f"{md_escape(up.name)} was not accepted")
                return None
            st.success(f"{md_escape(ds.name)}: {ds.queries} queries over {ds.corpus} passages.")
            st.session_state["eval_uploaded"] = ds.name
        name = st.session_state.get("eval_uploaded")
        if name:
            st.caption(f"Uploaded dataset: {md_escape(name)}")
        return str(name) if name else None
    try:
        sets = client.datasets().datasets
    except ApiError as e:
        show_error(e, "Datasets are unavailable")
        return None
    if not sets:
        st.info(
            "No registered datasets: upload one, or copy a QA/SQuAD JSON file into "
            "TUNESTACK_HOME/datasets/."
        )
        return None
    names = [d.name for d in sets if d.name.endswith(".json")]  # .jsonl: RAG tab only
    if not names:
        st.info("No QA/SQuAD JSON datasets (JSONL ones are for the RAG tab).")
        return None
    return str(st.selectbox("Registered dataset", names, key="eval_dataset"))


def run_form(client: RagClient) -> None:
    reg = embedders(client)
    if reg is None:
        return
    models, serving = reg
    names = [m.name for m in models]
    default = [serving.default_embedder] + [m.name for m in models if m.base_model]
    default = [n for n in dict.fromkeys(default) if n in names][:3]
    dataset = choose_dataset(client)
    c1, c2 = st.columns([4, 1])
    chosen = c1.multiselect(
        "Embedders (the first is the baseline)",
        names,
        default=default,
        max_selections=6,
        key="eval_models",
    )
    top_k = c2.number_input("k of MRR@k", 1, 100, 10, key="eval_k")
    ready = bool(dataset and chosen)
    if (
        st.button(
            "Run evaluation",
            type="primary",
            disabled=not ready,
            key="eval_run",
            icon=":material/play_arrow:",
        )
        and dataset
    ):
        try:
            started = client.start_eval(
                EvalJobRequest(dataset=dataset, models=chosen, top_k=int(top_k))
            )
        except ApiError as e:
            show_error(e, "Could not start the evaluation")
            return
        st.session_state[JOB] = started
    job: JobInfo | None = st.session_state.get(JOB)
    if job:
        chosen_names = md_escape(", ".join(job.params["models"]))
        done = follow_job(client, job, f"Evaluating {chosen_names}")
        st.session_state.pop(JOB, None)
        if done and done.status == "done" and done.result:
            st.session_state[OPENED] = done.result["report"]  # open the new report


def show_report(client: RagClient, name: str) -> None:
    try:
        rep = client.report(name)
    except ApiError as e:
        show_error(e, f"Report {md_escape(name)}")
        return
    models = rep.models
    k = rep.top_k or 10
    metrics = tuple(m if m != "mrr@10" else f"mrr@{k}" for m in HEADLINE)
    st.markdown(
        f"**{md_escape(rep.name)}** · dataset {md_escape(rep.dataset or '')} · "
        f"{md_escape(rep.created or '')}"
    )
    for model, red in rep.error_reduction.items():
        first = next(iter(models))
        st.metric(
            f"{md_escape(model)} vs {md_escape(first)}: error (1 − MRR@{k}) removed",
            f"{red:.1%}",
            delta=f"{models[model].get(f'mrr@{k}', 0) - models[first].get(f'mrr@{k}', 0):+.3f} MRR",
        )
    st.dataframe(
        pd.DataFrame(metric_rows(models, metrics)).set_index("model"),
        width="stretch",
        column_config={m: st.column_config.NumberColumn(format="%.4f") for m in metrics},
    )
    rows = chart_rows(models, metrics)
    if rows:
        st.bar_chart(
            pd.DataFrame(rows), x="metric", y="value", color="model", stack=False, height=300
        )
    png = next((f for f in rep.files if f.name == "metrics.png"), None)
    with st.expander("Report files (metrics.png, report.md)"):
        if png:
            api_image(client, png, caption="metrics.png")
        st.markdown(safe_markdown(rep.markdown))


def history(client: RagClient) -> None:
    try:
        reports: list[ReportSummary] = [
            r for r in client.reports().reports if r.kind == "embed-eval"
        ]
    except ApiError as e:
        show_error(e, "Reports are unavailable")
        return
    if not reports:
        st.caption("No evaluation reports yet.")
        return
    table = [
        {
            "report": r.name,
            "created": r.created,
            "dataset": (r.dataset or "").rsplit("/", 1)[-1],
            **{f"MRR {m}": v.get(f"mrr@{r.top_k or 10}") for m, v in list(r.models.items())[:3]},
        }
        for r in reports
    ]
    st.dataframe(
        pd.DataFrame(table), width="stretch", hide_index=True, height=min(300, 38 + 35 * len(table))
    )
    names = [r.name for r in reports]
    if st.session_state.get(OPENED) not in names:
        st.session_state.pop(OPENED, None)
    name = st.selectbox("Open report", names, key=OPENED)
    show_report(client, name)


def render() -> None:
    require_admin()
    client = get_client()
    st.title("Evaluate")
    embed, rag = st.tabs(["Embedders", "RAG"])
    with embed:
        with st.container(border=True):
            st.subheader("New evaluation")
            run_form(client)
        st.subheader("Reports")
        history(client)
    with rag:
        rag_tab(client)


if __name__ == "__main__":
    render()
