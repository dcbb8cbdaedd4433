"""Streamlit pieces every page shares: who is signed in, the API client, errors, the
status banner, jobs.

One place decides how a failure looks (st.error with the API's message and its hint)
and how a long action shows progress (st.status + st.progress polling a job), so the
pages cannot drift apart on either.

The UI has no key of its own: each browser session signs in with its user's key, kept in
that session's st.session_state only. The UI process's TUNESTACK_API_KEY is never sent:
whoever opens port 8501 would act with it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import streamlit as st
from pydantic import ValidationError

from services.common.api_client import START_HINT, ApiError, RagClient
from services.common.api_schemas import (
    ArtifactFile,
    CollectionInfo,
    JobInfo,
    ModelSummary,
    ServingInfo,
    WhoAmI,
)
from services.ui.logic import job_text, md_escape, safe_markdown
from services.ui.settings import UiSettings

POLL_S = 0.5
READY_TTL_S = 5.0
# Quick calls (lists, a retrieval, starting a job) give up after this; the slow ones (an
# answer, one file's ingest) wait UiSettings.timeout_s.
REQUEST_TIMEOUT_S = 15.0
START_HINTS = {
    "api": START_HINT,
    "chroma": "Start it with `tunestack up`; `tunestack status` shows it, "
    "`tunestack logs chroma` says why it stopped.",
    "llm": "Start it with `tunestack up` (llama.cpp or Ollama), or point "
    "TUNESTACK_RAG_LLM_BASE_URL at a running OpenAI-compatible server.",
}
NAMES = {"chroma": "Chroma (vector store)", "llm": "The LLM server"}
# session_state keys: (api_url, key or None, WhoAmI or None = must sign in), the client
AUTH = "_auth"
CLIENT = "_auth_client"
NOTICE = "_auth_notice"


def get_settings() -> UiSettings:
    """Read on every run, not cached: the environment may change between runs."""
    return UiSettings()


def _auth() -> tuple[str, str | None, WhoAmI | None] | None:
    """This session's sign-in for the API the settings name now (None: not asked yet)."""
    state = st.session_state.get(AUTH)
    return state if state and state[0] == get_settings().api_url else None


def identity() -> WhoAmI | None:
    """Who this session acts as: the key it signed in with, or anyone when the API has no
    keys; None when it must sign in first. Raises ApiError when the API cannot say.

    The keyless question is asked once per session: the API counts each as a failed key
    check against the UI's address (all its users share it) and slows that address down."""
    state = _auth()
    if state is None:
        url = get_settings().api_url
        try:
            with RagClient(url, None, timeout=REQUEST_TIMEOUT_S) as c:
                state = (url, None, c.whoami())
        except ApiError as e:
            if e.status != 401:
                raise
            state = (url, None, None)
        st.session_state[AUTH] = state
    return state[2]


def sign_in(key: str) -> WhoAmI:
    """Check a key with GET /v1/whoami and keep it for this session (ApiError if refused)."""
    url = get_settings().api_url
    with RagClient(url, key, timeout=REQUEST_TIMEOUT_S) as c:
        who = c.whoami()
    st.session_state[AUTH] = (url, key if who.auth else None, who)
    forget_readiness()
    return who


def sign_out(notice: str | None = None) -> None:
    """Forget the key and all this session saw: answers may quote private documents."""
    client = st.session_state.get(CLIENT)
    if client is not None:
        client.close()
    st.session_state.clear()
    if notice:
        st.session_state[NOTICE] = notice


def is_admin() -> bool:
    state = _auth()
    return bool(state and state[2] and state[2].role == "admin")


def require_admin() -> None:
    """First line of every admin page: a user key may still open its URL directly."""
    try:
        who = identity()
    except ApiError as e:
        show_error(e)
        st.stop()
    if who is None or who.role != "admin":
        st.error(
            "This page needs an admin key: it changes documents, models or datasets.",
            icon=":material/lock:",
        )
        st.stop()


def get_client() -> RagClient:
    """This session's client (one pooled connection), with the key it signed in with."""
    state = _auth()
    url, key = get_settings().api_url, state[1] if state else None
    client: RagClient | None = st.session_state.get(CLIENT)
    if client is None or client.base_url != url.rstrip("/") or client.api_key != key:
        if client is not None:
            client.close()
        client = st.session_state[CLIENT] = RagClient(url, key, timeout=REQUEST_TIMEOUT_S)
    return client


def show_error(e: ApiError, what: str | None = None) -> None:
    """The API's message and hint (a 403 says which role is needed), never a traceback.
    Both may quote names and files, so they are made inert."""
    head = f"{what}: " if what else ""
    hint = f"\n\n**What to do:** {safe_markdown(e.hint)}" if e.hint else ""
    st.error(f"{head}{safe_markdown(e.message)}{hint}", icon=":material/error:")


def api_down(url: str) -> None:
    st.error(
        f"**The RAG API is down**: nothing answers at {url}. " + START_HINTS["api"],
        icon=":material/power_off:",
    )


def invalid(e: ValidationError) -> ApiError:
    """A request the client's models refused, worded as the API words its own 422."""
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
    )
    return ApiError(f"The request is not valid. {problems}", status=422)


def readiness(client: RagClient) -> dict[str, Any]:
    """{'api', 'chroma', 'llm'} -> up?, cached a few seconds per session."""
    cached = st.session_state.get("_ready")
    now = time.monotonic()
    if cached and cached[0] == client.base_url and now - cached[1] < READY_TTL_S:
        return dict(cached[2])
    raw = client.readiness()
    checks = raw.get("checks", {})
    out: dict[str, Any] = {
        "api": bool(raw["api"]),
        "auth": raw.get("auth", True) is not False,
        "chroma": bool(raw["api"]) and bool(checks.get("chroma", {}).get("ok", False)),
        "llm": bool(raw["api"]) and bool(checks.get("llm", {}).get("ok", False)),
        "_urls": {k: v.get("url", "") for k, v in checks.items()},
    }
    st.session_state["_ready"] = (client.base_url, now, out)
    return out


def stack_banner(client: RagClient) -> dict[str, Any]:
    """A banner naming whatever is down and how to start it; returns the readiness map."""
    ready: dict[str, Any] = readiness(client)
    if not ready["api"]:
        api_down(client.base_url)
        return ready
    if not ready["auth"]:
        st.error("**The RAG API no longer accepts this key.**", icon=":material/key_off:")
        return ready
    urls = ready.get("_urls", {})
    for svc in ("chroma", "llm"):
        if not ready[svc]:
            where = f" at {md_escape(urls[svc])}" if urls.get(svc) else ""
            st.error(
                f"**{NAMES[svc]} is down**{where}. {START_HINTS[svc]}", icon=":material/warning:"
            )
    return ready


def linked_index(options: list[str], param: str = "collection") -> int:
    """Preselect the option a link names (?collection=kb), so pages can be linked to."""
    wanted = st.query_params.get(param)
    return options.index(wanted) if wanted in options else 0


def forget_readiness() -> None:
    st.session_state.pop("_ready", None)


def follow_job(client: RagClient, job: JobInfo, label: str) -> JobInfo | None:
    """Poll a job to its end inside st.status with a progress bar; the final job or None."""
    with st.status(label, expanded=True) as box:
        bar = st.progress(job.progress, text=md_escape(job_text(job)))
        while job.status in ("queued", "running"):
            time.sleep(POLL_S)
            try:
                job = client.job(job.id)
            except ApiError as e:
                box.update(label=f"{label}: lost track of the job", state="error")
                show_error(e)
                return None
            bar.progress(job.progress, text=md_escape(job_text(job)))
        if job.status == "failed":
            err = job.error
            box.update(label=f"{label}: failed", state="error")
            show_error(ApiError(err.message, err.hint) if err else ApiError("The job failed."))
            return job
        box.update(label=f"{label}: done", state="complete", expanded=False)
    return job


def start_job(
    client: RagClient, kind: str, start: Callable[[], JobInfo], label: str
) -> JobInfo | None:
    """Start a job with `start` (a RagClient call that answers one, its request built
    inside it) and follow it; errors shown, None on failure to start."""
    try:
        job = start()
    except ValidationError as e:
        show_error(invalid(e), f"Could not start the {kind}")
        return None
    except ApiError as e:
        show_error(e, f"Could not start the {kind}")
        return None
    return follow_job(client, job, label)


@st.cache_data(show_spinner=False, max_entries=64)
def _image(api_url: str, path: str, size: int, key_digest: str, _client: RagClient) -> bytes:
    return _client.get_bytes(path)


def api_image(client: RagClient, file: ArtifactFile, caption: str | None = None) -> None:
    """A PNG the API serves (loss curve, report chart), cached by URL, size and key: the
    cache is the process's, and another key may not be allowed to read it."""
    digest = hashlib.sha256((client.api_key or "").encode()).hexdigest()
    try:
        data = _image(client.base_url, file.url, file.size, digest, client)
    except ApiError as e:
        show_error(e, f"Could not load {md_escape(file.name)}")
        return
    st.image(data, caption=md_escape(caption or file.name), width="stretch")


def collections(client: RagClient) -> list[CollectionInfo] | None:
    """Collections with their builds, or None after showing why they are unavailable."""
    try:
        return client.collections().collections
    except ApiError as e:
        show_error(e, "Collections are unavailable")
        return None


def embedders(client: RagClient) -> tuple[list[ModelSummary], ServingInfo] | None:
    """Registered embedders and the serving info, or None after showing the error."""
    try:
        body = client.models(kind="embedder")
    except ApiError as e:
        show_error(e, "The model registry is unavailable")
        return None
    return body.models, body.serving
