"""Tunestack chat page: ask a collection, read a streamed answer, open its citations."""

from __future__ import annotations

from typing import Any

import streamlit as st

from services.ui.api_client import ApiClient, ApiDown
from services.ui.settings import UiSettings

START_HINTS = {
    "api": "Start the stack: `tunestack up`.",
    "chroma": "Chroma is down: `tunestack up` restarts it (logs: `tunestack status`).",
    "llm": "The LLM server is down: `tunestack up` restarts it.",
}


def banner(client: ApiClient) -> bool:
    ready = client.readiness()
    if not ready["api"]:
        st.error(
            f"The RAG API is not reachable at {client.settings.api_url}. " + START_HINTS["api"]
        )
        return False
    down = [name for name, c in ready["checks"].items() if not c.get("ok")]
    for name in down:
        url = ready["checks"][name].get("url", "")
        st.warning(f"{name} is down ({url}). {START_HINTS.get(name, '')}")
    return "chroma" not in down


def render_sources(sources: list[dict[str, Any]]) -> None:
    for s in sources:
        where = s.get("file_name", "") + (f", page {s['page']}" if s.get("page") else "")
        with st.expander(f"[{s['index']}] {where} · score {s.get('score', 0):.3f}"):
            st.caption(f"{s.get('source')} · chunk {s.get('chunk_index')}")
            st.write(s.get("text", ""))


def main() -> None:
    st.set_page_config(page_title="Tunestack", page_icon="📚", layout="wide")
    client = ApiClient(UiSettings())
    st.title("Tunestack · document Q&A")
    if not banner(client):
        return
    try:
        cols = client.get("/v1/collections")["collections"]
    except ApiDown as e:
        st.error(str(e))
        return
    if not cols:
        st.info("No collections yet. Ingest documents: `tunestack ingest PATH --collection NAME`.")
        return
    with st.sidebar:
        names = [c["name"] for c in cols]
        collection = st.selectbox("Collection", names, key="collection")
        builds = next(c["builds"] for c in cols if c["name"] == collection)
        embedder = st.selectbox("Embedder", [b["embedder"] for b in builds], key="embedder")
        mode = st.selectbox("Retrieval", ["dense", "hybrid", "bm25"], key="mode")
        top_k = st.slider("Passages", 1, 10, 4, key="top_k")
        if st.button("Clear conversation"):
            st.session_state.history = []

    history: list[dict[str, Any]] = st.session_state.setdefault("history", [])
    for turn in history:
        with st.chat_message(turn["role"]):
            st.markdown(turn["content"])
            if turn.get("sources"):
                render_sources(turn["sources"])

    question = st.chat_input("Ask about your documents")
    if not question:
        return
    history.append({"role": "user", "content": question})
    with st.chat_message("user"):
        st.markdown(question)
    with st.chat_message("assistant"):
        sources: list[dict[str, Any]] = []

        def tokens() -> Any:
            msgs = [{"role": t["role"], "content": t["content"]} for t in history]
            for chunk in client.stream_chat(
                collection, msgs, embedder=embedder, retrieval_mode=mode, top_k=top_k
            ):
                if chunk.get("sources"):
                    sources.extend(chunk["sources"])
                for choice in chunk.get("choices", []):
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        yield text

        try:
            answer = st.write_stream(tokens())
        except ApiDown as e:
            st.error(str(e))
            history.pop()
            return
        text = answer if isinstance(answer, str) else "".join(map(str, answer))
        render_sources(sources)
    history.append({"role": "assistant", "content": text, "sources": sources})


main()
