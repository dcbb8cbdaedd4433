"""Streamlit pieces every page shares: the API client, errors, the status banner, jobs.

One place decides how a failure looks (st.error with the API's message and its hint)
and how a long action shows progress (st.status + st.progress polling a job), so the
pages cannot drift apart on either.
"""

from __future__ import annotations

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
)
from services.ui.logic import job_text
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


@st.cache_resource(show_spinner=False)
def _client(api_url: str, api_key: str | None) -> RagClient:
    return RagClient(api_url, api_key, timeout=REQUEST_TIMEOUT_S)


def get_settings() -> UiSettings:
    """Read on every run, not cached: the environment may change between runs."""
    return UiSettings()


def get_client(settings: UiSettings | None = None) -> RagClient:
    """A pooled client per API address and key."""
    s = settings or get_settings()
    return _client(s.api_url, s.api_key_value)


def show_error(e: ApiError, what: str | None = None) -> None:
    """The API's message and hint, never a traceback."""
    head = f"{what}: " if what else ""
    hint = f"\n\n**What to do:** {e.hint}" if e.hint else ""
    st.error(f"{head}{e.message}{hint}", icon=":material/error:")


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
        st.error(
            f"**The RAG API is down**: nothing answers at {client.base_url}. " + START_HINTS["api"],
            icon=":material/power_off:",
        )
        return ready
    if not ready["auth"]:
        st.error(
            "**The RAG API refused the API key.** Set TUNESTACK_API_KEY for the UI to the "
            "key the API was started with.",
            icon=":material/key_off:",
        )
        return ready
    urls = ready.get("_urls", {})
    for svc in ("chroma", "llm"):
        if not ready[svc]:
            where = f" at {urls.get(svc)}" if urls.get(svc) else ""
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
        bar = st.progress(job.progress, text=job_text(job))
        while job.status in ("queued", "running"):
            time.sleep(POLL_S)
            try:
                job = client.job(job.id)
            except ApiError as e:
                box.update(label=f"{label}: lost track of the job", state="error")
                show_error(e)
                return None
            bar.progress(job.progress, text=job_text(job))
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
def _image(api_url: str, path: str, size: int, _client: RagClient) -> bytes:
    return _client.get_bytes(path)


def api_image(client: RagClient, file: ArtifactFile, caption: str | None = None) -> None:
    """A PNG the API serves (loss curve, report chart), cached by URL and size."""
    try:
        data = _image(client.base_url, file.url, file.size, client)
    except ApiError as e:
        show_error(e, f"Could not load {file.name}")
        return
    st.image(data, caption=caption or file.name, width="stretch")


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
