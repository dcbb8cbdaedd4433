"""The UI's only way to reach the stack: the RAG API over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from services.ui.settings import UiSettings


class ApiDown(Exception):
    """The API (or a service behind it) is unavailable; the message says which and why."""


@dataclass
class ApiClient:
    settings: UiSettings

    @property
    def headers(self) -> dict[str, str]:
        key = self.settings.api_key
        return {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}

    def _url(self, path: str) -> str:
        return self.settings.api_url.rstrip("/") + path

    def get(self, path: str, timeout: float = 5.0) -> Any:
        try:
            r = httpx.get(self._url(path), headers=self.headers, timeout=timeout)
        except httpx.HTTPError as e:
            raise ApiDown(
                f"The RAG API is not reachable at {self.settings.api_url} "
                f"({type(e).__name__}). Start the stack: `tunestack up`."
            ) from e
        if r.status_code >= 400:
            raise ApiDown(_message(r))
        return r.json()

    def readiness(self) -> dict[str, Any]:
        """{'api': ok, 'chroma': ok, 'llm': ok} plus the raw checks, never raising."""
        try:
            r = httpx.get(self._url("/readyz"), headers=self.headers, timeout=5.0)
            body = r.json()
        except (httpx.HTTPError, ValueError):
            return {"api": False, "checks": {}}
        return {"api": True, "checks": body.get("checks", {})}

    def stream_chat(
        self, collection: str, messages: list[dict[str, str]], **options: Any
    ) -> Iterator[dict[str, Any]]:
        """Yield parsed SSE chunks of a RAG answer (first one carries `sources`)."""
        body = {"model": f"rag/{collection}", "messages": messages, "stream": True, **options}
        try:
            with httpx.stream(
                "POST",
                self._url("/v1/chat/completions"),
                json=body,
                headers=self.headers,
                timeout=self.settings.timeout_s,
            ) as r:
                if r.status_code >= 400:
                    r.read()
                    raise ApiDown(_message(r))
                for line in r.iter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line[6:]
                    if data.strip() == "[DONE]":
                        return
                    chunk = json.loads(data)
                    if "error" in chunk:
                        err = chunk["error"]
                        raise ApiDown(f"{err.get('message')} {err.get('hint', '')}".strip())
                    yield chunk
        except httpx.HTTPError as e:
            raise ApiDown(f"Lost the connection to the RAG API ({type(e).__name__}).") from e


def _message(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return f"HTTP {r.status_code}: {r.text[:200]}"
    msg = body.get("message") or body.get("detail") or str(body)
    hint = body.get("hint")
    return f"{msg} {hint}" if hint else str(msg)
