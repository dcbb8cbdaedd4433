"""Refuse request bodies over a limit before they are parsed or spooled to disk.

A declared Content-Length over the limit is refused at once. A chunked body (no length)
is counted as it arrives: at the limit this middleware answers 413 itself and tells the
app the client went away, so the app stops reading, and whatever the app then tries to
send is dropped (otherwise FastAPI would report its broken multipart parse as a 400).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.rag_api.http_errors import send_error


class BodyLimit:
    def __init__(self, app: ASGIApp, limit_bytes: int) -> None:
        self.app = app
        self.limit = limit_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared and declared.isdigit() and int(declared) > self.limit:
            await self.refuse(send)
            return
        seen = 0
        refused = False

        async def counted() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    refused = True
                    await self.refuse(send)
                    return {"type": "http.disconnect"}
            return msg

        async def guarded_send(msg: Message) -> None:
            if not refused:
                await send(msg)

        try:
            await self.app(scope, counted, guarded_send)
        except Exception:
            if not refused:
                raise

    async def refuse(self, send: Send) -> None:
        await send_error(
            send,
            413,
            "TooLarge",
            f"Request body exceeds {self.limit // 2**20} MB.",
            "Raise TUNESTACK_RAG_MAX_UPLOAD_MB or ingest large files with the CLI.",
        )
