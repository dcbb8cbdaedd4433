"""Tunestack UI entry: sign-in, page navigation and the stack banner every page shares.

Each page is its own small script under views/ (st.navigation runs one per rerun), so a
page only pays for the API calls it makes. Before any page: when the API has keys, the
session signs in with one (services.ui.components keeps it in that session only), and the
navigation lists only the pages its role may use. The banner runs next: whichever page a
user opens, a dead API, Chroma or LLM is named with how to start it.
"""

from __future__ import annotations

import streamlit as st

from services.common.api_client import ApiError, ApiUnreachable
from services.common.api_schemas import WhoAmI
from services.ui.components import (
    NOTICE,
    api_down,
    get_client,
    get_settings,
    identity,
    show_error,
    sign_in,
    sign_out,
    stack_banner,
)
from services.ui.logic import md_escape, pages_for

# Streamlit's default top padding (6rem) costs a fifth of a 800 px tall window.
COMPACT = "<style>[data-testid='stMainBlockContainer']{padding-top:2.2rem}</style>"


def login_form() -> None:
    """The API wants a key: ask for it, check it with /v1/whoami, then show the app."""
    st.title("Sign in to Tunestack")
    notice = st.session_state.pop(NOTICE, None)
    if notice:
        st.warning(notice, icon=":material/key_off:")
    st.caption(
        "This Tunestack API needs a key (an admin creates one with `tunestack keys create "
        "NAME`). It is kept in this browser session only; *Log out* forgets it."
    )
    with st.form("login", clear_on_submit=True):
        key = st.text_input("API key", type="password", key="login_key", placeholder="tsk_…")
        sent = st.form_submit_button("Sign in", type="primary", key="login_submit")
    if not sent:
        return
    if not key.strip():
        st.error("Enter your API key.", icon=":material/key:")
        return
    try:
        sign_in(key.strip())
    except ApiError as e:
        if e.status == 401:
            st.error(
                "**That API key was not accepted.** Check it was copied whole (it starts "
                "with `tsk_`) and has not been revoked (`tunestack keys list`).",
                icon=":material/key_off:",
            )
        else:
            show_error(e, "Could not sign in")
        return
    st.rerun()


def account(who: WhoAmI) -> None:
    with st.sidebar:
        if not who.auth:
            st.caption("The API has no keys: everyone here may change the stack.")
            return
        st.caption(f"Signed in as **{md_escape(who.name)}** ({who.role})")
        st.button("Log out", key="logout", on_click=sign_out, icon=":material/logout:")


def main() -> None:
    st.set_page_config(page_title="Tunestack", page_icon="📚", layout="wide")
    st.html(COMPACT)
    try:
        who = identity()
    except ApiUnreachable:
        api_down(get_settings().api_url)
        st.stop()
    except ApiError as e:
        show_error(e, "The RAG API did not say who may use it")
        st.stop()
    if who is None:
        login_form()
        st.stop()
    nav = st.navigation(
        [
            st.Page(p.path, title=p.title, icon=p.icon, default=i == 0)
            for i, p in enumerate(pages_for(who.role))
        ]
    )
    account(who)
    ready = stack_banner(get_client())
    if not ready["auth"]:  # the key was revoked, or the API now has keys
        sign_out("The API no longer accepts this session's key: sign in again.")
        st.rerun()
    if not ready["api"]:
        st.stop()
    nav.run()


main()
