"""One error shape for every failure the API answers: `{error, message, hint}`.

Our own errors (services.common.errors), FastAPI's validation errors, Starlette's 404/405,
the body limit's 413, the guard's 401/403/421/429 and unexpected exceptions all leave
through here, so a client parses one shape. An unexpected exception is logged with a short
reference and answered with that reference only: its text may hold server paths or
internals. Messages from our own errors pass through `redact` for the same reason.
"""

from __future__ import annotations

import logging
import re
import secrets
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from services.common.errors import DiskFull, TunestackError, disk_full_of

log = logging.getLogger("tunestack.rag_api")

# absolute POSIX paths of two or more components (/home/x/..., /tmp/abc/...), not URLs'
# and not this API's own routes (/v1/models in a hint is an endpoint to call)
_ABS_PATH = re.compile(r"(?<![\w:/.])/(?!v1/)(?:[\w.@+-]+/)+[\w.@+-]*")

STATUS_ERRORS = {
    400: ("BadRequest", "The request is malformed."),
    401: ("Unauthorized", "Missing or unknown API key."),
    403: ("Forbidden", "Not allowed."),
    404: ("NotFound", "No such endpoint."),
    405: ("MethodNotAllowed", "This endpoint does not take that method."),
    413: ("TooLarge", "The request body is too large."),
    415: ("UnsupportedMediaType", "Unsupported content type."),
    429: ("TooManyRequests", "Too many requests."),
}
STATUS_HINTS = {
    400: "Send JSON that parses, or multipart form data with at most 1000 files and 1000 "
    "fields per request (more files: split them over several requests, or use "
    "`tunestack ingest FOLDER`).",
    404: "GET /docs (with a key) lists the endpoints.",
    405: "GET /docs (with a key) lists each endpoint's methods.",
}
# An error raised deep in a service may carry no hint (the CLI prints its message alone);
# an API client still gets one, by status.
FALLBACK_HINTS = {
    404: "GET /v1/collections, /v1/registry/models and /v1/datasets list what exists.",
    409: "The message says what is in the way; retry once it is resolved.",
    422: "Correct the value the message names; GET /docs (with a key) shows each field.",
    429: "Wait a moment and send it again.",
    503: "GET /readyz shows which service is down.",
    504: "GET /readyz shows which service is slow; send it again later.",
}


def redact(text: str, roots: tuple[Path, ...] = ()) -> str:
    """`text` with known roots shown relative (uploads/x.pdf) and other absolute paths
    reduced to their file name: a client learns what it sent, never the server's layout."""
    for root in roots:
        text = text.replace(f"{root}/", "").replace(str(root), ".")
    return _ABS_PATH.sub(lambda m: Path(m.group(0)).name or "…", text)


# A full disk is services.common.errors.DiskFull (507); the API words it as a request.
REQUEST = {"what": "the request", "again": "send the request again"}


def body(error: str, message: str, hint: str | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"error": error, "message": message}
    if hint:
        out["hint"] = hint
    return {**out, **extra}


async def send_error(
    send: Send,
    status: int,
    error: str,
    message: str,
    hint: str | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    """Answer from ASGI middleware (no request object yet)."""
    resp = JSONResponse(body(error, message, hint), status_code=status, headers=headers)
    await resp({"type": "http"}, _disconnected, send)


async def _disconnected() -> Any:
    return {"type": "http.disconnect"}


def install(app: FastAPI, roots: tuple[Path, ...]) -> None:
    @app.exception_handler(TunestackError)
    async def _known(_: Request, e: TunestackError) -> JSONResponse:
        if isinstance(e, DiskFull):
            e = e.reworded(**REQUEST)
        d = {k: redact(v, roots) if k in ("message", "hint") else v for k, v in e.to_dict().items()}
        d.setdefault("hint", FALLBACK_HINTS.get(e.status_code, FALLBACK_HINTS[422]))
        wait = getattr(e, "retry_after", None)
        headers = {"Retry-After": str(wait)} if wait else None
        return JSONResponse(d, status_code=e.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        errs = [
            {"field": ".".join(str(p) for p in err.get("loc", ())), "problem": err.get("msg")}
            for err in e.errors()
        ]
        first = f" ({errs[0]['field']}: {errs[0]['problem']})" if errs else ""
        return JSONResponse(
            body(
                "BadInput",
                f"The request is not valid{first}.",
                "See `details`, and the schema at /docs.",
                details=errs,
            ),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        error, default = STATUS_ERRORS.get(e.status_code, ("HttpError", "Request failed."))
        message = e.detail if isinstance(e.detail, str) and e.detail else default
        if message in ("Not Found", "Method Not Allowed"):
            message = default
        return JSONResponse(
            body(error, redact(message, roots), STATUS_HINTS.get(e.status_code)),
            status_code=e.status_code,
            headers=getattr(e, "headers", None),
        )

    @app.exception_handler(OSError)
    async def _os_error(request: Request, e: OSError) -> JSONResponse:
        """A full disk anywhere under the API (507, never a 500); other OSErrors are
        unexpected."""
        full = disk_full_of(e)
        if full is None:
            return await _unknown(request, e)
        log.error("disk full: %s", e)
        return await _known(request, full)

    @app.exception_handler(Exception)
    async def _unknown(_: Request, e: Exception) -> JSONResponse:
        ref = secrets.token_hex(4)
        log.exception("unhandled error (ref %s)", ref)
        return JSONResponse(
            body(
                "InternalError",
                f"The server failed unexpectedly (ref {ref}).",
                f"Search the rag-api log for ref {ref} (tunestack logs rag-api).",
            ),
            status_code=500,
        )
