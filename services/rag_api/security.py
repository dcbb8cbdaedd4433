"""The API's front door: host, origin, key, role and rate checks, before any body is read.

It is one ASGI middleware rather than FastAPI dependencies because dependencies run after
FastAPI has read and parsed the body: a multipart upload from anyone would be spooled to
disk before the key was looked at. Here a request is refused from its headers alone.

Order, cheapest refusal first:
1. Host: with no keys the API is a laptop service and answers only to loopback names
   (a DNS-rebinding page cannot reach it through another host name); with keys, the names
   in TUNESTACK_RAG_ALLOWED_HOSTS when set.
2. Origin: a state-changing request from a browser page of another origin is refused
   (multipart ingest and dataset upload are "simple" requests any web page can send;
   without CORS headers the page cannot read the answer, but the upload would be done).
3. Failed-auth limit per client address, then the key, then the role of the route
   (ROUTE_ROLES: every route is listed, checked at start; /healthz is the only public one).
4. Per-key rate (requests per minute) and concurrency limits: 429 with Retry-After.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import Headers
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from services.common.api_schemas import BODY_ERRORS, GUARD_ERRORS, ErrorBody
from services.common.auth import Authenticator, Identity, Role, key_id_of
from services.common.errors import TunestackError
from services.rag_api.http_errors import send_error

PUBLIC = None
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})

# (method, path) of every route -> the role it needs; None = public. A route missing here
# is a startup error (check_route_roles), so a new endpoint cannot ship unguarded.
ROUTE_ROLES: dict[tuple[str, str], Role | None] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): "user",
    ("GET", "/v1/whoami"): "user",
    ("GET", "/openapi.json"): "user",
    ("GET", "/docs"): "user",
    ("GET", "/docs/oauth2-redirect"): "user",
    ("GET", "/redoc"): "user",
    # asking
    ("POST", "/v1/retrieve"): "user",
    ("GET", "/v1/collections"): "user",
    ("POST", "/v1/chat/completions"): "user",
    ("GET", "/v1/models"): "user",
    ("POST", "/v1/embeddings"): "user",
    ("GET", "/v1/admin/llm"): "user",
    ("GET", "/v1/registry/models"): "user",
    ("GET", "/v1/registry/models/{kind}/{name}"): "user",
    ("GET", "/v1/registry/models/{kind}/{name}/files/{filename}"): "user",
    # changing
    ("POST", "/v1/ingest"): "admin",
    ("DELETE", "/v1/collections/{name}"): "admin",
    ("POST", "/v1/collections/{name}/reindex"): "admin",
    ("POST", "/v1/collections/{name}/relevance"): "admin",
    ("POST", "/v1/admin/llm"): "admin",
    ("POST", "/v1/registry/models/llm/{name}/deploy"): "admin",
    ("GET", "/v1/reports"): "admin",
    ("GET", "/v1/reports/{name}"): "admin",
    ("GET", "/v1/reports/{name}/files/{filename}"): "admin",
    ("GET", "/v1/datasets"): "admin",
    ("POST", "/v1/datasets"): "admin",
    ("POST", "/v1/jobs/eval"): "admin",
    ("POST", "/v1/jobs/ingest"): "admin",
    ("POST", "/v1/jobs/reindex"): "admin",
    ("POST", "/v1/jobs/rag-eval"): "admin",
    ("POST", "/v1/jobs/tune"): "admin",
    ("POST", "/v1/jobs/train"): "admin",
    ("GET", "/v1/jobs"): "admin",
    ("GET", "/v1/jobs/{job_id}"): "admin",
}


_COMPILED = [(m, compile_path(p)[0], role) for (m, p), role in ROUTE_ROLES.items()]
HTTP_METHODS = ("get", "post", "put", "patch", "delete")


def check_route_roles(openapi_paths: dict[str, Any]) -> None:
    """Every operation of the app (its OpenAPI paths) has a role in ROUTE_ROLES; a
    startup error otherwise."""
    missing = [
        f"{m.upper()} {p}"
        for p, ops in openapi_paths.items()
        for m in ops
        if m in HTTP_METHODS and (m.upper(), p) not in ROUTE_ROLES
    ]
    if missing:
        raise RuntimeError(
            "Routes without a role in services/rag_api/security.py ROUTE_ROLES: "
            + ", ".join(missing)
        )


def document_guard(openapi: dict[str, Any]) -> None:
    """Say in the published schema what the guard enforces (in place): a bearer key on
    every route but the public ones, the guard's own answers (401, 403, 429) there, and
    what any route with a body may answer before it runs (400, 413, 422)."""
    components = openapi.setdefault("components", {})
    components.setdefault("schemas", {}).setdefault("ErrorBody", ErrorBody.model_json_schema())
    components.setdefault("securitySchemes", {})["bearer"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "A key from `tunestack keys create` (tsk_...), or TUNESTACK_API_KEY.",
    }
    for path, ops in openapi["paths"].items():
        for method, op in ops.items():
            if method not in HTTP_METHODS:
                continue
            public = ROUTE_ROLES.get((method.upper(), path), "user") is PUBLIC
            op["security"] = [] if public else [{"bearer": []}]
            errors = ({} if public else GUARD_ERRORS) | (BODY_ERRORS if "requestBody" in op else {})
            responses = op.setdefault("responses", {})
            for code, spec in errors.items():
                responses.setdefault(
                    str(code),
                    {
                        "description": spec["description"],
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/ErrorBody"}
                            }
                        },
                    },
                )


def required_role(method: str, path: str) -> Role | None:
    """The role of the route a request reaches. Unknown paths (404) and known paths with
    another method (405) need a user key: nobody without one learns which paths exist."""
    method = "GET" if method == "HEAD" else method
    for m, regex, role in _COMPILED:
        if m == method and regex.match(path):
            return role
    return "user"


def host_name(host_header: str) -> str:
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class SlidingWindow:
    """At most `limit` events per `window` seconds per key; says how long to wait."""

    def __init__(self, limit: int, window: float = 60.0) -> None:
        self.limit, self.window = limit, window
        self._events: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    MAX_KEYS = 10_000  # past this many tracked keys, idle ones are dropped (made-up key ids)

    def _sweep(self, t: float) -> None:
        for k in [k for k, q in self._events.items() if not q or q[-1] <= t - self.window]:
            del self._events[k]

    def _trim(self, q: deque[float], t: float) -> None:
        while q and q[0] <= t - self.window:
            q.popleft()

    def retry_after(self, key: str) -> int:
        """0 if another event is allowed now, else whole seconds until it is."""
        t = time.monotonic()
        with self._lock:
            if len(self._events) > self.MAX_KEYS:
                self._sweep(t)
            q = self._events[key]
            self._trim(q, t)
            if len(q) < self.limit:
                return 0
            return max(1, math.ceil(q[0] + self.window - t))

    def add(self, key: str) -> None:
        with self._lock:
            self._events[key].append(time.monotonic())

    def take(self, key: str) -> int:
        """Record an event if allowed; else the seconds to wait (nothing recorded)."""
        wait = self.retry_after(key)
        if wait == 0:
            self.add(key)
        return wait


class Slots:
    """At most `limit` requests in flight per key."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._busy: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def acquire(self, key: str) -> bool:
        with self._lock:
            if self._busy[key] >= self.limit:
                return False
            self._busy[key] += 1
            return True

    def release(self, key: str) -> None:
        with self._lock:
            self._busy[key] -= 1


@dataclass(frozen=True)
class GuardConfig:
    allowed_hosts: frozenset[str]
    allowed_origins: frozenset[str]
    rate_per_minute: int
    max_concurrent: int
    failed_auth_per_minute: int


class Guard:
    def __init__(self, app: ASGIApp, *, auth: Authenticator, config: GuardConfig) -> None:
        self.app = app
        self.auth = auth
        self.cfg = config
        self.failures = SlidingWindow(config.failed_auth_per_minute)
        self.rate = SlidingWindow(config.rate_per_minute)
        self.slots = Slots(config.max_concurrent)

    # ---- the checks --------------------------------------------------------------------------

    def host_ok(self, headers: Headers) -> bool:
        host = host_name(headers.get("host", ""))
        if is_loopback(host) or host in self.cfg.allowed_hosts:
            return True
        return self.auth.required and not self.cfg.allowed_hosts

    def origin_ok(self, headers: Headers) -> bool:
        origin = headers.get("origin")
        if origin is None:
            # no Origin: not a browser, or a same-origin GET; fetch metadata still tells
            return headers.get("sec-fetch-site", "none") in ("none", "same-origin")
        if origin in self.cfg.allowed_origins:
            return True
        host = headers.get("host", "")
        return origin in (f"http://{host}", f"https://{host}")

    # ---- ASGI --------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if not self.host_ok(headers):
            await send_error(
                send,
                421,
                "BadHost",
                "This API does not answer to that host name.",
                "Use 127.0.0.1, or add the name to TUNESTACK_RAG_ALLOWED_HOSTS (and create "
                "keys with `tunestack keys create` before exposing the API).",
            )
            return
        role = required_role(scope["method"], scope["path"])
        if scope["method"] not in SAFE_METHODS and not self.origin_ok(headers):
            await send_error(
                send,
                403,
                "CrossOrigin",
                "State-changing requests from another site's page are refused.",
                "Call the API from your own client, or add the page's origin to "
                "TUNESTACK_RAG_ALLOWED_ORIGINS.",
            )
            return
        if role is PUBLIC:
            await self.app(scope, receive, send)
            return
        identity = await self._authenticate(scope, headers, send)
        if identity is None:
            return
        if not identity.can(role):
            await send_error(
                send,
                403,
                "Forbidden",
                f"This needs an admin key; key '{identity.name}' has the {identity.role} role.",
                "Ask an admin, or create an admin key with "
                "`tunestack keys create NAME --role admin`.",
            )
            return
        scope.setdefault("state", {})["identity"] = identity
        if identity.via == "open":
            await self.app(scope, receive, send)
            return
        wait = self.rate.take(identity.id)
        if wait:
            await _too_many(send, wait, f"more than {self.cfg.rate_per_minute} requests a minute")
            return
        if not self.slots.acquire(identity.id):
            await _too_many(send, 1, f"more than {self.cfg.max_concurrent} requests at once")
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.slots.release(identity.id)

    async def _authenticate(self, scope: Scope, headers: Headers, send: Send) -> Identity | None:
        """Check the key; wrong keys are counted per (client address, key id).

        Counting per address alone would let 30 wrong sign-ins typed into the UI (every UI
        user reaches the API from the UI's one address) lock every UI user out; per key id,
        a guesser only stops guessing that key. A request with no key at all is answered
        401 and not counted: it guesses nothing.
        """
        client = (scope.get("client") or ("unknown", 0))[0]
        auth = headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        bucket = f"{client}|{key_id_of(token) or '-'}"
        if token:
            wait = self.failures.retry_after(bucket)
            if wait:
                await _too_many(send, wait, "too many failed checks of this key from your address")
                return None
        identity = self.auth.identify(token or None)
        if identity is None:
            if token:
                self.failures.add(bucket)
            await send_error(
                send,
                401,
                "Unauthorized",
                "Missing or unknown API key (send Authorization: Bearer <key>).",
                "Create a key with `tunestack keys create NAME`, or use TUNESTACK_API_KEY.",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return identity


async def _too_many(send: Send, wait: int, why: str) -> None:
    await send_error(
        send,
        429,
        "TooManyRequests",
        f"Slow down: {why}.",
        f"Retry after {wait} s; an admin can raise TUNESTACK_RAG_RATE_PER_MINUTE or "
        "TUNESTACK_RAG_MAX_CONCURRENT.",
        headers={"Retry-After": str(wait)},
    )


def check_exposure(host: str, exposed_on: str | None, auth: Authenticator) -> None:
    """Refuse to serve beyond loopback with no keys: anyone who reaches the port could
    read every collection and change the stack."""
    where = exposed_on or host
    if auth.required or is_loopback(host_name(where)):
        return
    raise ExposureRefused(
        f"The API would listen on {where} (beyond this machine) with no API keys.",
        hint="Create a key first: `tunestack keys create admin --role admin` (or set "
        "TUNESTACK_API_KEY), or bind to 127.0.0.1.",
    )


class ExposureRefused(TunestackError):
    status_code = 500
