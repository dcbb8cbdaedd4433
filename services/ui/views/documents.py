"""Documents: upload files into a collection, reindex it for another embedder, delete it.

Files are sent to POST /v1/ingest one at a time, so the progress bar moves per file and
each file's outcome (ok / unchanged / failed and why) is known as soon as it is in; one
bad file never hides the others' results.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from services.common.api_client import ApiError, RagClient
from services.common.api_schemas import BuildInfo, CollectionInfo, ReindexJobRequest
from services.ui.components import (
    collections,
    embedders,
    get_client,
    get_settings,
    linked_index,
    readiness,
    require_admin,
    show_error,
    start_job,
)
from services.ui.logic import ingest_rows, md_escape

NEW = "New collection…"  # never a valid collection name (spaces, …)
TYPES = ["md", "markdown", "txt", "pdf", "docx", "html", "htm"]
LAST = "docs_last_ingest"
DELETED = "docs_deleted"


def overview(cols: list[CollectionInfo]) -> None:
    rows = [
        {"collection": c.name, "embedder": b.embedder, "chunks": b.chunks, "created": b.created}
        for c in cols
        for b in c.builds
    ]
    if rows:
        st.dataframe(pd.DataFrame(rows), width="stretch", hide_index=True)
    else:
        st.caption("No collections yet.")


def ingest_files(
    client: RagClient, files: list[Any], collection: str, embedder: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """(a row per file, the API's warnings once each: e.g. Chinese files given to an
    English-only embedder)."""
    rows: list[dict[str, Any]] = []
    warnings: list[str] = []
    timeout = get_settings().timeout_s
    into = md_escape(collection)
    bar = st.progress(0.0, text=f"Ingesting {len(files)} file(s) into '{into}'…")
    for i, f in enumerate(files):
        bar.progress(i / len(files), text=f"{i + 1}/{len(files)}: {md_escape(f.name)}")
        try:
            report = client.ingest(
                [(f.name, f.getvalue())], collection, embedder=embedder, timeout=timeout
            )
            rows += ingest_rows(report)
            warnings += [w for w in report.warnings if w not in warnings]
        except ApiError as e:
            rows.append({"file": f.name, "status": "failed", "chunks": 0, "reason": str(e)})
            if e.status != 413:  # not about this file (bad name, Chroma down): stop here
                show_error(e, "Ingest stopped")
                break
    bar.progress(1.0, text=f"Done: {len(files)} file(s).")
    return rows, warnings


def upload_section(client: RagClient, cols: list[CollectionInfo]) -> None:
    reg = embedders(client)
    if reg is None:
        return
    models, serving = reg
    names = [c.name for c in cols]
    c1, c2, c3 = st.columns(3)
    wanted = st.query_params.get("collection")
    if wanted and wanted not in names:  # a link to a collection to create: name prefilled
        st.session_state.setdefault("docs_new_name", wanted)
        index = len(names)
    else:
        index = linked_index(names)
    choice = c1.selectbox("Collection", [*names, NEW], index=index, key="docs_collection")
    collection = (
        c2.text_input("New collection name", key="docs_new_name", placeholder="e.g. handbook")
        if choice == NEW
        else choice
    )
    built: list[BuildInfo] = next((c.builds for c in cols if c.name == collection), [])
    emb_names = [m.name for m in models]
    default = built[0].embedder if built else serving.default_embedder
    embedder = c3.selectbox(
        "Embedder",
        emb_names,
        index=emb_names.index(default) if default in emb_names else 0,
        key="docs_embedder",
    )
    nonce = st.session_state.setdefault("docs_nonce", 0)
    files = st.file_uploader(
        "Files (.md .txt .pdf .docx .html)",
        type=TYPES,
        accept_multiple_files=True,
        max_upload_size=serving.max_file_mb,
        key=f"docs_files_{nonce}",
    )
    if st.button("Ingest", type="primary", disabled=not (files and collection), key="docs_ingest"):
        rows, warnings = ingest_files(client, list(files or []), collection, embedder)
        st.session_state[LAST] = {"collection": collection, "rows": rows, "warnings": warnings}
        st.session_state["docs_nonce"] = nonce + 1  # empty the uploader for the next batch
        st.rerun()
    last = st.session_state.get(LAST)
    if last:
        rows = last["rows"]
        failed = sum(r["status"] == "failed" for r in rows)
        into = md_escape(last["collection"])
        msg = f"'{into}': {len(rows) - failed} of {len(rows)} file(s) ingested."
        (st.warning if failed else st.success)(msg)
        for w in last.get("warnings", []):
            st.warning(md_escape(w))
        st.dataframe(pd.DataFrame(rows), width="stretch", hide_index=True)


def reindex_section(client: RagClient, cols: list[CollectionInfo]) -> None:
    reg = embedders(client)
    if reg is None or not cols:
        return
    c1, c2, c3 = st.columns([2, 2, 1], vertical_alignment="bottom")
    name = c1.selectbox("Collection", [c.name for c in cols], key="docs_reidx_c")
    built = {b.embedder for b in next(c.builds for c in cols if c.name == name)}
    todo = [m.name for m in reg[0] if m.name not in built]
    if not todo:
        st.caption(f"'{md_escape(name)}' is built for every registered embedder.")
        return
    emb = c2.selectbox("For embedder", todo, key="docs_reidx_e")
    if c3.button("Reindex", key="docs_reindex", icon=":material/build:"):
        job = start_job(
            client,
            "reindex",
            lambda: client.start_reindex(ReindexJobRequest(collection=name, embedder=emb)),
            f"Building '{md_escape(name)}' for {md_escape(emb)}",
        )
        if job and job.status == "done":
            chunks = (job.result or {}).get("chunks")
            st.success(f"'{md_escape(name)}' is now built for {md_escape(emb)}: {chunks} chunks.")


def delete_section(client: RagClient, cols: list[CollectionInfo]) -> None:
    if not cols:
        return
    c1, c2, c3 = st.columns([2, 2, 1], vertical_alignment="bottom")
    name = c1.selectbox("Collection", [c.name for c in cols], key="docs_del_c")
    typed = c2.text_input("Type its name to confirm", key="docs_del_confirm", placeholder=name)
    if c3.button(
        "Delete",
        type="primary",
        disabled=typed != name,
        key="docs_delete",
        icon=":material/delete:",
    ):
        try:
            client.delete_collection(name)
        except ApiError as e:
            show_error(e, f"Could not delete '{md_escape(name)}'")
            return
        st.session_state.pop("docs_del_confirm", None)
        st.session_state[DELETED] = name
        st.rerun()


def render() -> None:
    require_admin()
    client = get_client()
    st.title("Documents")
    if not readiness(client)["chroma"]:
        return
    cols = collections(client)
    if cols is None:
        return
    gone = st.session_state.pop(DELETED, None)
    if gone:
        st.success(f"Deleted '{md_escape(gone)}' (every embedder's build).")
    overview(cols)
    with st.container(border=True):
        st.subheader("Upload")
        upload_section(client, cols)
    if cols:
        with st.container(border=True):
            st.subheader("Reindex with another embedder")
            reindex_section(client, cols)
        with st.container(border=True):
            st.subheader("Delete a collection")
            delete_section(client, cols)


if __name__ == "__main__":
    render()
