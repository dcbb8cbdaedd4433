"""Streamlit pieces every page shares: the API client, errors, the status banner, jobs.

One place decides how a failure looks (st.error with the API's message and its hint)
and how a long action shows progress (st.status + st.progress polling a job), so the
pages cannot drift apart on either.
"""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from services.ui.api_client import ApiClient, ApiError
from services.ui.logic import job_text
from services.ui.settings import UiSettings

POLL_S = 0.5
READY_TTL_S = 5.0
START_HINTS = {
    "api": "Start the stack: `tunestack up` (or set TUNESTACK_UI_API_URL to where it runs).",
    "chroma": "Start it with `tunestack up`; `tunestack status` shows it, "
    "`tunestack logs chroma` says why it stopped.",
    "llm": "Start it with `tunestack up` (llama.cpp or Ollama), or point "
    "TUNESTACK_RAG_LLM_BASE_URL at a running OpenAI-compatible server.",
}
NAMES = {"chroma": "Chroma (vector store)", "llm": "The LLM server"}


@st.cache_resource(show_spinner=False)
def _client(api_url: str, api_key: str | None, timeout_s: float) -> ApiClient:
    s = UiSettings(api_url=api_url, api_key=api_key, timeout_s=timeout_s)
    return ApiClient(s)


def get_client() -> ApiClient:
    """A pooled client per API address; settings are re-read on every run (env changes)."""
    s = UiSettings()
    key = s.api_key.get_secret_value() if s.api_key else None
    return _client(s.api_url, key, s.timeout_s)


def show_error(e: ApiError, what: str | None = None) -> None:
    """The API's message and hint, never a traceback."""
    head = f"{what}: " if what else ""
    hint = f"\n\n**What to do:** {e.hint}" if e.hint else ""
    st.error(f"{head}{e.message}{hint}", icon=":material/error:")


def readiness(client: ApiClient) -> dict[str, Any]:
    """{'api', 'chroma', 'llm'} -> up?, cached a few seconds per session."""
    cached = st.session_state.get("_ready")
    now = time.monotonic()
    if cached and cached[0] == client.settings.api_url and now - cached[1] < READY_TTL_S:
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
    st.session_state["_ready"] = (client.settings.api_url, now, out)
    return out


def stack_banner(client: ApiClient) -> dict[str, Any]:
    """A banner naming whatever is down and how to start it; returns the readiness map."""
    ready: dict[str, Any] = readiness(client)
    if not ready["api"]:
        st.error(
            f"**The RAG API is down**: nothing answers at {client.settings.api_url}. "
            + START_HINTS["api"],
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


def follow_job(client: ApiClient, job: dict[str, Any], label: str) -> dict[str, Any] | None:
    """Poll a job to its end inside st.status with a progress bar; the final job or None."""
    with st.status(label, expanded=True) as box:
        bar = st.progress(float(job.get("progress", 0.0)), text=job_text(job))
        while job["status"] in ("queued", "running"):
            time.sleep(POLL_S)
            try:
                job = client.get(f"/v1/jobs/{job['id']}")
            except ApiError as e:
                box.update(label=f"{label}: lost track of the job", state="error")
                show_error(e)
                return None
            bar.progress(float(job["progress"]), text=job_text(job))
        if job["status"] == "failed":
            err = job.get("error") or {}
            box.update(label=f"{label}: failed", state="error")
            show_error(ApiError(err.get("message", "The job failed."), err.get("hint")))
            return job
        box.update(label=f"{label}: done", state="complete", expanded=False)
    return job


def start_job(
    client: ApiClient, kind: str, body: dict[str, Any], label: str, path: str | None = None
) -> dict[str, Any] | None:
    """POST /v1/jobs/<kind> (or `path`, which answers a job) and follow it; errors shown,
    None on failure to start."""
    try:
        job = client.post(path or f"/v1/jobs/{kind}", json=body)
    except ApiError as e:
        show_error(e, f"Could not start the {kind}")
        return None
    return follow_job(client, job, label)


@st.cache_data(show_spinner=False, max_entries=64)
def _image(api_url: str, path: str, size: int, _client: ApiClient) -> bytes:
    return _client.get_bytes(path)


def api_image(client: ApiClient, file: dict[str, Any], caption: str | None = None) -> None:
    """A PNG the API serves (loss curve, report chart), cached by URL and size."""
    try:
        data = _image(client.settings.api_url, file["url"], int(file.get("size", 0)), client)
    except ApiError as e:
        show_error(e, f"Could not load {file.get('name')}")
        return
    st.image(data, caption=caption or file.get("name"), width="stretch")


def collections(client: ApiClient) -> list[dict[str, Any]] | None:
    """Collections with their builds, or None after showing why they are unavailable."""
    try:
        return list(client.get("/v1/collections")["collections"])
    except ApiError as e:
        show_error(e, "Collections are unavailable")
        return None


def embedders(client: ApiClient) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
    """Registered embedders and the serving info, or None after showing the error."""
    try:
        body = client.get("/v1/registry/models", params={"kind": "embedder"})
    except ApiError as e:
        show_error(e, "The model registry is unavailable")
        return None
    return list(body["models"]), dict(body["serving"])
