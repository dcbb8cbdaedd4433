"""Tunestack UI entry: page navigation plus the stack banner every page shares.

Each page is its own small script under views/ (st.navigation runs one per rerun), so a
page only pays for the API calls it makes. The banner runs before any page: whichever
page a user opens, a dead API, Chroma or LLM is named with how to start it.
"""

from __future__ import annotations

import streamlit as st

from services.ui.components import get_client, stack_banner

PAGES = (
    ("views/chat.py", "Chat", ":material/chat:"),
    ("views/compare.py", "Compare retrieval", ":material/compare_arrows:"),
    ("views/evaluate.py", "Evaluate", ":material/analytics:"),
    ("views/models.py", "Models", ":material/model_training:"),
    ("views/documents.py", "Documents", ":material/folder_open:"),
)


# Streamlit's default top padding (6rem) costs a fifth of a 800 px tall window.
COMPACT = "<style>[data-testid='stMainBlockContainer']{padding-top:2.2rem}</style>"


def main() -> None:
    st.set_page_config(page_title="Tunestack", page_icon="📚", layout="wide")
    st.html(COMPACT)
    nav = st.navigation(
        [
            st.Page(path, title=title, icon=icon, default=i == 0)
            for i, (path, title, icon) in enumerate(PAGES)
        ]
    )
    ready = stack_banner(get_client())
    if not ready["api"] or not ready["auth"]:
        st.stop()
    nav.run()


main()
