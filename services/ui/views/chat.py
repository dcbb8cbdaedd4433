"""Chat: ask a collection, read the answer as it streams, open its citations.

The conversation lives in st.session_state, so it survives reruns and page switches
for as long as the browser tab is open, and is gone on reload (nothing is stored
server-side: the documents may be private).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import streamlit as st

from services.common.api_client import ApiError, RagClient
from services.common.api_schemas import ChatMessage, ChatRequest, CollectionInfo, Source
from services.ui.components import (
    collections,
    forget_readiness,
    get_client,
    get_settings,
    is_admin,
    linked_index,
    readiness,
    show_error,
)
from services.ui.logic import llm_choices, md_escape, quoted_chunk, safe_markdown

HISTORY = "chat_history"


def render_sources(sources: list[Source]) -> None:
    """Citations as expandable cards: [n] file · chunk · score, the chunk text inside
    (inert: a chunk is whatever the document said)."""
    for s in sources:
        page = f", page {s.page}" if s.page else ""
        name = md_escape(s.file_name)
        label = f"[{s.index}] {name}{page} · chunk {s.chunk_index} · score {s.score:.3f}"
        with st.expander(label):
            st.caption(md_escape(s.source))
            st.markdown(safe_markdown(quoted_chunk(s.text)))


def copy_button(text: str, key: str) -> None:
    """st.code carries Streamlit's copy-to-clipboard icon; a popover keeps it compact."""
    with st.popover("Copy answer", icon=":material/content_copy:", key=key):
        st.code(text, language=None, wrap_lines=True)


def llm_options(client: RagClient, llm_up: bool) -> tuple[list[str], str]:
    """Models the LLM server serves (the deployed one first) and the deployed name."""
    try:
        serving = client.models(kind="llm").serving
        models = client.served_models().data if llm_up else []
    except ApiError:
        return [], ""
    deployed = serving.llm_model
    return llm_choices(models, deployed), deployed


def sidebar(client: RagClient, cols: list[CollectionInfo], llm_up: bool) -> dict[str, Any]:
    with st.sidebar:
        st.subheader("Ask")
        names = [c.name for c in cols]
        collection = st.selectbox("Collection", names, index=linked_index(names), key="collection")
        builds = next(c.builds for c in cols if c.name == collection)
        embedder = st.selectbox(
            "Embedder",
            [b.embedder for b in builds],
            key="embedder",
            help="A collection is searchable with the embedders it was built for "
            "(Documents → Reindex adds one).",
        )
        options, deployed = llm_options(client, llm_up)
        llm = st.selectbox(
            "LLM",
            options or ["(LLM server down)"],
            key="llm",
            disabled=not options,
            help="Models the LLM server serves; the first is the deployed one.",
        )
        mode = st.selectbox("Retrieval", ["dense", "hybrid", "bm25"], key="mode")
        top_k = st.slider("Passages", 1, 10, 4, key="top_k")
        max_tokens = st.number_input(
            "Max answer tokens",
            min_value=8,
            max_value=4096,
            value=None,
            step=32,
            placeholder="server default",
            key="max_tokens",
            help="Shorter answers come faster from a small CPU model.",
        )
        if st.button("Clear conversation", key="clear", icon=":material/delete_sweep:"):
            st.session_state[HISTORY] = []
    return {
        "collection": collection,
        "embedder": embedder,
        "llm": llm if options and llm != deployed else None,
        "retrieval_mode": mode,
        "top_k": top_k,
        "max_tokens": int(max_tokens) if max_tokens else None,
    }


def chat_request(history: list[dict[str, Any]], opts: dict[str, Any]) -> ChatRequest:
    """The conversation so far as a RAG request to the chosen collection."""
    return ChatRequest(
        model=f"rag/{opts['collection']}",
        messages=[ChatMessage(role=t["role"], content=t["content"]) for t in history],
        embedder=opts["embedder"],
        llm=opts["llm"],
        retrieval_mode=opts["retrieval_mode"],
        top_k=opts["top_k"],
        max_tokens=opts["max_tokens"],
    )


def stream_inert(tokens: Iterator[str]) -> str:
    """Show an answer as it streams, the whole text so far made inert on every token: an
    image split across tokens (`![x` then `](https://…)`) is only seen as a whole."""
    box = st.empty()
    text = ""
    for token in tokens:
        text += token
        box.markdown(safe_markdown(text) + " ▌")
    box.markdown(safe_markdown(text))
    return text


def answer(client: RagClient, history: list[dict[str, Any]], opts: dict[str, Any]) -> None:
    """Stream one answer into the page; on failure show why and drop the question."""
    sources: list[Source] = []
    timeout = get_settings().timeout_s

    def tokens() -> Iterator[str]:
        for chunk in client.stream_chat(chat_request(history, opts), timeout=timeout):
            if chunk.get("sources"):
                sources.extend(Source.model_validate(s) for s in chunk["sources"])
            for choice in chunk.get("choices", []):
                text = (choice.get("delta") or {}).get("content")
                if text:
                    yield text

    with st.chat_message("assistant"):
        try:
            text = stream_inert(tokens())
        except ApiError as e:
            show_error(e, "No answer")
            if e.service:
                forget_readiness()
            history.pop()
            return
        render_sources(sources)
        copy_button(text, key=f"copy-{len(history)}")
    history.append({"role": "assistant", "content": text, "sources": sources})


def render() -> None:
    client = get_client()
    ready = readiness(client)
    st.title("Chat with your documents")
    if not ready["chroma"]:
        return  # the banner above says what is down and how to start it
    cols = collections(client)
    if cols is None:
        return
    if not cols:
        if not is_admin():  # Documents is not in a user's navigation
            st.info("No collections yet: ask an admin to upload documents.")
            return
        st.info("No collections yet: upload documents on the Documents page.")
        st.page_link("views/documents.py", label="Go to Documents", icon=":material/upload:")
        return
    opts = sidebar(client, cols, ready["llm"])
    history: list[dict[str, Any]] = st.session_state.setdefault(HISTORY, [])
    for i, turn in enumerate(history):
        with st.chat_message(turn["role"]):
            st.markdown(safe_markdown(turn["content"]))
            if turn["role"] == "assistant":
                render_sources(turn.get("sources", []))
                copy_button(turn["content"], key=f"copy-{i}")
    question = st.chat_input(
        f"Ask about '{opts['collection']}'" if ready["llm"] else "The LLM server is down",
        disabled=not ready["llm"],
    )
    if not question:
        return
    history.append({"role": "user", "content": question})
    with st.chat_message("user"):
        st.markdown(safe_markdown(question))
    answer(client, history, opts)


if __name__ == "__main__":
    render()
