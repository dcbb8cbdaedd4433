"""Models: the registry as the API reports it — LLM runs and embedders, with their
metrics, loss curves, exports and which one serves.

Only what a model's meta.json records is shown: exports and the parity table appear once
the converter writes them. Deploy (to Ollama) runs as an API job with progress, then the
API serves the model; llama.cpp deploys are the CLI's (the API shows the command), and
without the API's Ollama client only the CLI command is shown.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from services.common.api_client import ApiError, RagClient
from services.common.api_schemas import (
    ArtifactFile,
    DeployRequest,
    ModelSummary,
    ReindexJobRequest,
    ServingInfo,
    TuneJobRequest,
)
from services.ui.components import (
    api_image,
    collections,
    get_client,
    require_admin,
    show_error,
    start_job,
)
from services.ui.logic import flat_metrics, human_size, md_escape, safe_markdown


def _pngs(model: ModelSummary) -> list[ArtifactFile]:
    return [f for f in model.files if f.name.endswith(".png")]


def _table(rows: list[dict[str, Any]]) -> None:
    st.dataframe(pd.DataFrame(rows), width="stretch", hide_index=True)


def metrics_table(metrics: dict[str, Any]) -> None:
    flat = flat_metrics(metrics)
    if not flat:
        st.caption("No metrics recorded.")
        return
    _table([{"metric": k, "value": str(v)} for k, v in flat.items()])


def llm_tab(client: RagClient, llms: list[ModelSummary], serving: ServingInfo) -> None:
    if not llms:
        st.caption("No LLM is registered.")
        return
    summary = []
    for m in llms:
        train = m.metrics.get("train") or {}
        ev = m.metrics.get("eval") or {}
        summary.append(
            {
                "run": m.name,
                "serving": "yes" if m.deployed else "",
                "base": m.base_model or "(base model)",
                "created": m.created,
                "train loss": train.get("train_loss"),
                "eval loss": ev.get("eval_loss"),
                "exports": len(m.exports),
            }
        )
    _table(summary)
    name = st.selectbox("Run", [m.name for m in llms], key="models_llm")
    m = next(x for x in llms if x.name == name)
    left, right = st.columns([3, 2])
    with left:
        pngs = _pngs(m)
        for f in pngs:
            api_image(client, f)
        if not pngs:
            st.caption("No loss curve (base models have none; a run's appears after training).")
    with right:
        st.markdown(f"**{md_escape(m.name)}**" + (" · serving now" if m.deployed else ""))
        st.caption(f"base: {md_escape(m.base_model or '—')} · source: {md_escape(m.source or '—')}")
        metrics_table(m.metrics)
    if m.exports:
        st.markdown("**Exports**")
        _table(
            [
                {
                    **{k: v for k, v in row.items() if k not in ("size", "parity")},
                    "size": human_size(row.get("size") or row.get("bytes")),
                }
                for row in m.exports
            ]
        )
    if m.parity:
        st.markdown("**Parity (HF vs GGUF)**")
        _table(m.parity)
    if m.exports and not m.deployed:
        deploy_action(client, m, serving)


def deploy_action(client: RagClient, m: ModelSummary, serving: ServingInfo) -> None:
    """Deploy to Ollama as a job (progress, then the API serves it); llama.cpp: the CLI."""
    if not serving.deploy_available:
        st.caption(safe_markdown(serving.deploy_hint))
        return
    quants = list(dict.fromkeys(str(r["name"]) for r in m.exports if r.get("name")))
    run = m.name
    c1, c2, c3 = st.columns([1, 2, 1], vertical_alignment="bottom")
    quant = c1.selectbox(
        "Type", quants, index=quants.index("q8_0") if "q8_0" in quants else 0, key=f"dq-{run}"
    )
    name = c2.text_input("Ollama model name", value=run, key=f"dn-{run}").strip() or run
    if c3.button(f"Deploy {md_escape(run)}", key=f"deploy-{run}", type="primary"):
        job = start_job(
            client,
            "deploy",
            lambda: client.deploy(run, DeployRequest(to="ollama", quant=quant, name=name)),
            f"Deploying {md_escape(run)} ({md_escape(quant)}) to Ollama as '{md_escape(name)}'",
        )
        if job and job.status == "done":
            res = job.result or {}
            said = repr(res.get("verify", {}).get("response", "").strip())
            st.success(
                f"'{md_escape(name)}' is serving from Ollama at "
                f"{md_escape(res.get('base_url', ''))}; it answered: {md_escape(said)}"
            )
    st.caption(f"Ollama at {md_escape(serving.ollama_host)}. {safe_markdown(serving.deploy_hint)}")


def embedder_tab(
    client: RagClient, embs: list[ModelSummary], latest: dict[str, dict[str, float]]
) -> None:
    if not embs:
        st.caption("No embedder is registered.")
        return
    summary = []
    for m in embs:
        val = m.metrics.get("validation") or {}
        mrr = next((v for k, v in val.items() if k.endswith("mrr@10")), None)
        summary.append(
            {
                "embedder": m.name,
                "default": "yes" if m.deployed else "",
                "base": m.base_model or "(base model)",
                "fingerprint": m.fingerprint,
                "validation MRR@10": mrr,
                "last report MRR@10": latest.get(m.name, {}).get("mrr@10"),
                "collections": ", ".join(m.collections),
            }
        )
    _table(summary)
    name = st.selectbox("Embedder", [m.name for m in embs], key="models_emb")
    m = next(x for x in embs if x.name == name)
    left, right = st.columns([3, 2])
    with left:
        for f in _pngs(m):
            api_image(client, f)
        if not _pngs(m):
            st.caption("No training curve (base models have none).")
    with right:
        metrics_table(m.metrics)
        if m.parameters:
            with st.expander("Training parameters"):
                st.json(m.parameters, expanded=False)
    reindex_action(client, m)
    tune_action(client, m)


def tune_action(client: RagClient, model: ModelSummary) -> None:
    """`embed tune` on a collection's own chunks, as a job: pseudo-queries made from the
    chunks, then the collection built for the tuned model, ready to compare."""
    cols = collections(client)
    if not cols:
        return
    with st.expander(f"Tune {md_escape(model.name)} on a collection's documents"):
        c1, c2, c3 = st.columns([2, 2, 1], vertical_alignment="bottom")
        source = c1.selectbox("Collection", [c.name for c in cols], key="models_tune_c")
        name = c2.text_input("New embedder name", value=f"{model.name}-{source}", key="tune_n")
        epochs = c3.number_input("Epochs", 0.5, 20.0, 2.0, 0.5, key="models_tune_e")
        st.caption(
            "Queries are made from the chunks offline; a share is held out to measure the "
            "tuned model's MRR@10. Runs as a job (minutes to hours on a CPU)."
        )
        if st.button("Tune", key="models_tune", icon=":material/model_training:"):
            job = start_job(
                client,
                "tune",
                lambda: client.start_tune(
                    TuneJobRequest(
                        name=name.strip(), base=model.name, collection=source, epochs=epochs
                    )
                ),
                f"Tuning {md_escape(model.name)} on '{md_escape(source)}'",
            )
            if job and job.status == "done":
                res = job.result or {}
                st.success(
                    f"'{md_escape(res.get('embedder', name))}' is registered and "
                    f"'{md_escape(source)}' is built for it: compare them on the Compare page."
                )
                metrics_table(res.get("metrics") or {})


def reindex_action(client: RagClient, model: ModelSummary) -> None:
    cols = collections(client)
    if cols is None:
        return
    todo = [c.name for c in cols if c.name not in model.collections]
    if not todo:
        st.caption(
            "Every collection is built for this embedder."
            if cols
            else "No collections yet: upload documents on the Documents page."
        )
        return
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    target = c1.selectbox(
        f"Build a collection for {md_escape(model.name)}", todo, key="models_reidx_c"
    )
    if c2.button("Reindex", key="models_reindex", icon=":material/build:"):
        start_job(
            client,
            "reindex",
            lambda: client.start_reindex(ReindexJobRequest(collection=target, embedder=model.name)),
            f"Building '{md_escape(target)}' for {md_escape(model.name)}",
        )


def latest_report_metrics(client: RagClient) -> dict[str, dict[str, float]]:
    """Each embedder's metrics in the newest report that evaluated it."""
    try:
        reports = client.reports(limit=50).reports
    except ApiError:
        return {}
    out: dict[str, dict[str, float]] = {}
    for r in reports:  # newest first
        for name, vals in r.models.items():
            out.setdefault(name, vals)
    return out


def render() -> None:
    require_admin()
    client = get_client()
    st.title("Models")
    try:
        body = client.models()
    except ApiError as e:
        show_error(e, "The model registry is unavailable")
        return
    serving = body.serving
    st.caption(
        f"Serving LLM **{md_escape(serving.llm_model)}** at {md_escape(serving.llm_base_url)} · "
        f"default embedder **{md_escape(serving.default_embedder)}**"
    )
    for w in body.warnings:
        st.warning(safe_markdown(w))
    llm, emb = st.tabs(["LLM runs", "Embedders"])
    with llm:
        llm_tab(client, [m for m in body.models if m.kind == "llm"], serving)
    with emb:
        embedder_tab(
            client,
            [m for m in body.models if m.kind == "embedder"],
            latest_report_metrics(client),
        )


if __name__ == "__main__":
    render()
