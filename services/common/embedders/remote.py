"""Embedders behind an API: any OpenAI-compatible `/v1/embeddings` (OpenAI, Zhipu and
Qianfan through their OpenAI-compatible endpoints, vLLM, a local server) and Ollama's
`/api/embed`.

What a provider's limits and failures need, so that ingesting 10k chunks through one
neither floods it nor fails on its first hiccup:
- batches of at most `max_batch` inputs per request (Zhipu takes 64, Qianfan 16);
- retries with exponential backoff and jitter on 408/409/429/5xx and connection errors,
  waiting what a `Retry-After` header asks (seconds or an HTTP date) when it asks;
- a content-hash cache (cache.VectorCache), so unchanged chunks cost no call;
- an error that names the embedder, the provider and the host on anything else: a wrong
  key (401/403), an unknown model, a server that is down.
The key is read when a request needs it (settings.named_secret), is sent only to the
recorded base URL, never follows a redirect elsewhere, and is never written anywhere.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import random
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
from pydantic import SecretStr

from services.common.embedders.base import (
    Embedder,
    TextKind,
    estimate_tokens,
    normalize,
    progress_bar,
)
from services.common.embedders.cache import VectorCache, text_key
from services.common.errors import BadInput, Conflict, ServiceUnavailable
from services.common.records import EmbedderRecord, RemoteEndpoint
from services.common.registry import Entry, Registry, validate_name, versions

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
REMOTE_PROVIDERS = ("openai-compatible", "ollama")


def remote_fingerprint(provider: str, ep: RemoteEndpoint) -> str:
    """What decides the vectors: provider, URL, model, size and prefixes (never the key).
    A collection built through one endpoint is never queried through another."""
    ident = {
        "provider": provider,
        "base_url": ep.base_url.rstrip("/"),
        "model": ep.model,
        "dimensions": ep.dimensions,
        "query_prefix": ep.query_prefix,
        "document_prefix": ep.document_prefix,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def validate_endpoint(provider: str, ep: RemoteEndpoint) -> None:
    if provider not in REMOTE_PROVIDERS:
        raise BadInput(f"Unknown provider '{provider}'.", hint="Use openai-compatible or ollama.")
    parts = urlsplit(ep.base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BadInput(
            f"--base-url '{ep.base_url}' is not an http(s) URL.",
            hint="For example https://api.openai.com/v1 or http://127.0.0.1:11434.",
        )
    if parts.username or parts.password:
        raise BadInput(
            "--base-url must not carry credentials.",
            hint="Put the key in an environment variable and pass --api-key-env VAR.",
        )
    if not ep.model.strip():
        raise BadInput("--model is empty.", hint="Name the provider's embedding model.")
    if not 1 <= ep.max_batch <= 2048:
        raise BadInput("--max-batch must be between 1 and 2048.")
    if ep.dimensions is not None and ep.dimensions < 1:
        raise BadInput("--dimensions must be positive.")


class RemoteEmbedder(Embedder):
    def __init__(
        self,
        name: str,
        fingerprint: str,
        provider: str,
        endpoint: RemoteEndpoint,
        *,
        key: SecretStr | None = None,
        dimension: int | None = None,
        cache: VectorCache | None = None,
        attempts: int = 6,
        max_wait_s: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        validate_endpoint(provider, endpoint)
        self.name = name
        self.fingerprint = fingerprint
        self.provider = provider
        self.endpoint = endpoint
        self._key = key
        self._dimension = dimension
        self.cache = cache
        self.attempts = attempts
        self.max_wait_s = max_wait_s
        self._sleep = sleep
        self.calls = 0  # requests sent (tests and the bench count them)
        self._client = httpx.Client(timeout=endpoint.timeout_s, follow_redirects=False)
        self._lock = threading.Lock()

    # ---- Embedder ---------------------------------------------------------------------
    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self._dimension = int(self.encode(["dimension probe"]).shape[1])
        return self._dimension

    @property
    def max_seq_length(self) -> int:
        return 8192

    def tokens(self, text: str) -> list[int]:
        return [0] * estimate_tokens(text)

    def encode(
        self,
        texts: list[str],
        *,
        show_progress: bool = False,
        prompt: str | None = None,
        kind: TextKind = "document",
    ) -> np.ndarray:
        if not texts:
            return np.zeros((0, self._dimension or 0), dtype=np.float32)
        ep = self.endpoint
        prefix = (
            prompt
            if prompt is not None
            else (ep.query_prefix if kind == "query" else ep.document_prefix)
        )
        inputs = [prefix + t for t in texts]
        keys = [text_key(self.fingerprint, t) for t in inputs]
        found = self.cache.get_many(keys) if self.cache is not None else {}
        todo: dict[bytes, str] = {}
        for k, t in zip(keys, inputs, strict=True):
            if k not in found:
                todo.setdefault(k, t)  # identical texts are asked once
        pending = list(todo.items())
        bar = (
            progress_bar(len(pending), "Embedding requests") if show_progress and pending else None
        )
        for i in range(0, len(pending), ep.max_batch):
            batch = pending[i : i + ep.max_batch]
            vecs = self._embed([t for _, t in batch])
            fresh = {k: v for (k, _), v in zip(batch, vecs, strict=True)}
            found.update(fresh)
            if self.cache is not None:
                self.cache.put_many(fresh)
            if bar is not None:
                bar.update(len(batch))
        if bar is not None:
            bar.close()
        return normalize(np.stack([found[k] for k in keys]))

    # ---- the provider's API ------------------------------------------------------------
    def _embed(self, inputs: list[str]) -> np.ndarray:
        ep = self.endpoint
        base = ep.base_url.rstrip("/")
        body: dict[str, Any] = {"model": ep.model, "input": inputs}
        if ep.dimensions:
            body["dimensions"] = ep.dimensions
        if self.provider == "ollama":
            body["truncate"] = True
            data = self._post(f"{base}/api/embed", body)
            rows = data.get("embeddings") if isinstance(data, dict) else None
        else:
            body["encoding_format"] = "float"
            data = self._post(f"{base}/embeddings", body)
            items = data.get("data") if isinstance(data, dict) else None
            rows = (
                [d.get("embedding") for d in sorted(items, key=lambda d: d.get("index", 0))]
                if isinstance(items, list) and all(isinstance(d, dict) for d in items)
                else None
            )
        return self._check(rows, len(inputs))

    def _check(self, rows: Any, n: int) -> np.ndarray:
        if not isinstance(rows, list) or len(rows) != n:
            got = len(rows) if isinstance(rows, list) else "no"
            raise self._unavailable(
                f"answered with {got} vectors for {n} inputs (not an embeddings response)",
                "Check --base-url (an OpenAI-compatible base ends in /v1) and --provider.",
            )
        try:
            vecs = np.asarray(rows, dtype=np.float32)
        except (TypeError, ValueError):
            vecs = np.zeros((0,), dtype=np.float32)
        if vecs.ndim != 2 or not vecs.shape[1]:
            raise self._unavailable("answered with vectors that are not numbers of one size")
        if self._dimension is not None and vecs.shape[1] != self._dimension:
            raise self._unavailable(
                f"returned {vecs.shape[1]}-dimensional vectors; the registry records "
                f"{self._dimension}",
                f"The model behind it changed. Register it again under a new name (tunestack "
                f"embed add NEW ...) and reindex the collections built with '{self.name}'.",
            )
        self._dimension = int(vecs.shape[1])
        return vecs

    def _headers(self) -> dict[str, str]:
        if self._key is None:
            return {}
        return {"Authorization": f"Bearer {self._key.get_secret_value()}"}

    def _post(self, url: str, body: dict[str, Any]) -> Any:
        failure = ""
        for attempt in range(self.attempts):
            wait = _backoff(attempt)
            try:
                with self._lock:
                    self.calls += 1
                r = self._client.post(url, json=body, headers=self._headers())
            except httpx.TimeoutException:
                failure = f"did not answer within {self.endpoint.timeout_s:g} s"
            except httpx.TransportError as e:
                failure = f"is not reachable ({type(e).__name__})"
            else:
                if r.status_code < 300:
                    try:
                        return r.json()
                    except ValueError:
                        raise self._unavailable(
                            "answered with something that is not JSON"
                        ) from None
                if r.status_code in (401, 403):
                    raise self._refused_key(r)
                if r.status_code not in RETRY_STATUS:
                    raise self._unavailable(
                        f"refused the request ({r.status_code}: {_provider_message(r)})",
                        "Check --model (for Ollama: `ollama pull MODEL` on that server) and "
                        "--dimensions.",
                    )
                failure = f"answered {r.status_code} ({_provider_message(r)})"
                asked = _retry_after(r.headers.get("retry-after"))
                if asked is not None:
                    if asked > self.max_wait_s:
                        raise self._unavailable(
                            f"is rate limiting: it asks to wait {asked:.0f} s",
                            "Try again later, or lower --max-batch.",
                        )
                    wait = asked
            if attempt < self.attempts - 1:
                self._sleep(min(wait, self.max_wait_s))
        raise self._unavailable(
            f"{failure}, {self.attempts} tries",
            "Start that server or correct its address (tunestack embed add NAME ... "
            "--replace); the work done so far is kept, so rerun the command.",
        )

    def _where(self) -> str:
        return f"the {self.provider} embedding endpoint of '{self.name}' ({_host(self.endpoint)})"

    def _unavailable(self, what: str, hint: str | None = None) -> ServiceUnavailable:
        return ServiceUnavailable(f"embedder {self.name}", f"{_cap(self._where())} {what}.", hint)

    def _refused_key(self, r: httpx.Response) -> ServiceUnavailable:
        ep = self.endpoint
        source = (
            f"the environment variable {ep.api_key_env}"
            if ep.api_key_env
            else f"the file {ep.api_key_file}"
            if ep.api_key_file
            else None
        )
        if self._key is None:
            hint = (
                f"No key was sent: {source} is empty or missing. Set it and retry."
                if source
                else "Register it with --api-key-env VAR (or --api-key-file PATH) and set it."
            )
        else:
            hint = f"Put a valid key in {source} (read at every call; no restart needed)."
        return self._unavailable(
            f"refused the API key ({r.status_code}: {_provider_message(r)})", hint
        )


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _host(ep: RemoteEndpoint) -> str:
    return urlsplit(ep.base_url).netloc


def _backoff(attempt: int) -> float:
    """0.5, 1, 2, 4, 8 s (capped at 30), each with up to 50% jitter so that many clients
    retrying together do not arrive together."""
    return float(min(30.0, 0.5 * 2**attempt) * random.uniform(0.5, 1.0))


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _provider_message(r: httpx.Response) -> str:
    """The provider's own error text, short: OpenAI's {"error": {"message"}}, Ollama's
    {"error": "..."}, or the start of the body."""
    try:
        data = r.json()
    except ValueError:
        return r.text.strip()[:200] or r.reason_phrase
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        err = err.get("message")
    return str(err or data)[:200]


def vector_cache_for(registry: Registry, fingerprint: str) -> VectorCache:
    return VectorCache(registry.home / "cache" / "embeddings" / f"{fingerprint}.sqlite")


def register_remote(
    registry: Registry,
    name: str,
    provider: str,
    endpoint: RemoteEndpoint,
    *,
    replace: bool = False,
    probe: bool = True,
) -> Entry[EmbedderRecord]:
    """Record a remote embedder (`tunestack embed add`). Unless `probe` is off, one text is
    embedded first, which checks URL, model and key and learns the dimension, so a typo
    is reported now rather than halfway through an ingest. Only the CLI calls this: no
    request to the API can make it fetch a URL it was not configured with."""
    from services.common.settings import named_secret  # the key, read now, never stored

    validate_endpoint(provider, endpoint)
    validate_name(name)
    if not replace and (registry.entry_dir("embedder", name) / "meta.json").exists():
        raise Conflict(
            f"embedder '{name}' already exists in the registry.",
            hint="Pick another name, or pass --replace.",
        )
    fp = remote_fingerprint(provider, endpoint)
    dimension = endpoint.dimensions
    if probe:
        key = named_secret(endpoint.api_key_env, endpoint.api_key_file)
        emb = RemoteEmbedder(name, fp, provider, endpoint, key=key, attempts=3)
        dimension = int(emb.encode(["Tunestack checks this embedding endpoint."]).shape[1])
    record = EmbedderRecord(
        name=name,
        model_path=f"{endpoint.base_url.rstrip('/')}#{endpoint.model}",
        source=f"{provider}:{urlsplit(endpoint.base_url).netloc}",
        fingerprint=fp,
        provider=provider,
        remote=endpoint,
        dimension=dimension,
        versions=versions(),
    )
    return registry.write(record, replace=True)
