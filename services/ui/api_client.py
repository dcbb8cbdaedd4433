"""The UI's only way to reach the stack: the RAG API over HTTP.

The UI image has no torch, Chroma client or model code, so everything the pages show
comes through here. Every failure becomes an ApiError carrying the API's own message
and hint (the API never sends tracebacks), which pages show with st.error.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from services.ui.settings import UiSettings


class ApiError(Exception):
    """The API refused or failed a request; message and hint come from its JSON body."""

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        status: int | None = None,
        service: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.status = status
        self.service = service

    def __str__(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message


class ApiDown(ApiError):
    """The API, or a service behind it (service='chroma' | 'llm'), is unavailable."""


@dataclass
class ApiClient:
    settings: UiSettings
    _http: httpx.Client | None = field(default=None, repr=False)

    @property
    def headers(self) -> dict[str, str]:
        key = self.settings.api_key
        return {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}

    @property
    def http(self) -> httpx.Client:
        """One pooled connection per client: a page makes several calls per rerun."""
        if self._http is None:
            self._http = httpx.Client(
                base_url=self.settings.api_url.rstrip("/"), headers=self.headers
            )
        return self._http

    def _url(self, path: str) -> str:
        return self.settings.api_url.rstrip("/") + path

    def _unreachable(self, e: Exception) -> ApiDown:
        return ApiDown(
            f"The RAG API is not reachable at {self.settings.api_url} ({type(e).__name__}).",
            hint="Start the stack: `tunestack up` (or set TUNESTACK_UI_API_URL).",
        )

    def request(self, method: str, path: str, timeout: float = 15.0, **kw: Any) -> httpx.Response:
        try:
            r = self.http.request(method, path, timeout=timeout, **kw)
        except httpx.TimeoutException as e:
            raise ApiError(
                f"The RAG API did not answer {method} {path} within {timeout:.0f}s.",
                hint="It may be busy (ingest, reindex, evaluation); try again shortly.",
            ) from e
        except httpx.HTTPError as e:
            raise self._unreachable(e) from e
        if r.status_code >= 400:
            raise error_from(r)
        return r

    def get(self, path: str, timeout: float = 15.0, **kw: Any) -> Any:
        return self.request("GET", path, timeout, **kw).json()

    def post(self, path: str, timeout: float = 15.0, **kw: Any) -> Any:
        return self.request("POST", path, timeout, **kw).json()

    def delete(self, path: str, timeout: float = 60.0) -> Any:
        return self.request("DELETE", path, timeout).json()

    def get_bytes(self, path: str, timeout: float = 15.0) -> bytes:
        return self.request("GET", path, timeout).content

    def readiness(self) -> dict[str, Any]:
        """{'api': bool, 'checks': {'chroma': {...}, 'llm': {...}}}; never raises."""
        try:
            r = self.http.get("/readyz", timeout=6.0)
            body = r.json()
        except (httpx.HTTPError, ValueError):
            return {"api": False, "checks": {}}
        if r.status_code in (401, 403):
            return {"api": True, "checks": {}, "auth": False}
        return {"api": True, "checks": body.get("checks", {})}

    def stream_chat(
        self, collection: str, messages: list[dict[str, str]], **options: Any
    ) -> Iterator[dict[str, Any]]:
        """Yield parsed SSE chunks of a RAG answer (the first one carries `sources`)."""
        body = {"model": f"rag/{collection}", "messages": messages, "stream": True, **options}
        body = {k: v for k, v in body.items() if v is not None}
        try:
            with self.http.stream(
                "POST", "/v1/chat/completions", json=body, timeout=self.settings.timeout_s
            ) as r:
                if r.status_code >= 400:
                    r.read()
                    raise error_from(r)
                for line in r.iter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line[6:]
                    if data.strip() == "[DONE]":
                        return
                    chunk = json.loads(data)
                    if "error" in chunk:
                        err = chunk["error"]
                        cls = ApiDown if err.get("service") else ApiError
                        raise cls(
                            str(err.get("message", "The answer failed.")),
                            hint=err.get("hint"),
                            status=err.get("code"),
                            service=err.get("service"),
                        )
                    yield chunk
        except httpx.HTTPError as e:
            raise ApiDown(
                f"Lost the connection to the RAG API ({type(e).__name__}).",
                hint="Check that it is still running: `tunestack status`.",
            ) from e


def error_from(r: httpx.Response) -> ApiError:
    """An ApiError from an error response: its message, hint and the failing service."""
    try:
        body = r.json()
    except ValueError:
        return ApiError(f"HTTP {r.status_code}: {r.text[:200]}", status=r.status_code)
    if not isinstance(body, dict):
        return ApiError(f"HTTP {r.status_code}: {str(body)[:200]}", status=r.status_code)
    msg = body.get("message") or body.get("detail") or str(body)
    if body.get("details"):
        msg = f"{msg} " + "; ".join(
            f"{d.get('field')}: {d.get('problem')}" for d in body["details"] if isinstance(d, dict)
        )
    cls = ApiDown if r.status_code == 503 else ApiError
    return cls(str(msg), body.get("hint"), r.status_code, body.get("service"))
