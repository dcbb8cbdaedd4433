"""A local HTTP server that implements Ollama's documented API strictly enough to test our
client code against it (no Ollama server can run on these machines).

Endpoints and shapes follow Ollama's docs/api.md: HEAD/POST /api/blobs/:digest (digest
format checked, upload sha256 verified: 201 or 400), POST /api/create (model, from, files,
adapters, template, license, system, parameters, messages, stream, quantize; every
referenced blob must exist and a .gguf blob or an adapter must start with the GGUF magic;
an adapter (one here) is applied at generation by llama.cpp, as Ollama does; streamed
status lines unless stream is false), GET /api/tags, POST /api/show (404 for an unknown
model), POST /api/generate and POST /api/chat (Modelfile SYSTEM prepended when the
request has no system message, MESSAGE history, template rendered, `stop` parameters
applied). Generation is real: the blob is run by llama.cpp with the rendered prompt, so a
model registered with a wrong template or no stop tokens behaves wrongly here too.

OpenAI compatibility (docs/openai.md), what the RAG API uses once switched to Ollama:
GET /v1/models (ids with their tag, "name:latest") and non-streamed POST
/v1/chat/completions (model, messages, temperature, max_tokens, stop; the reply's `model`
is the requested name), through the same template and stops as /api/chat; errors in
OpenAI's {"error": {...}} shape, 404 for an unknown model.

Embeddings (docs/api.md "Generate Embeddings"): POST /api/embed with `model` and `input`
(a string or a list of strings; both required), optional `truncate` (default true; false
with an input over the model's context is a 400), `dimensions`, `keep_alive`, `options`;
the reply is {"model", "embeddings": [[...]], "total_duration", "load_duration",
"prompt_eval_count"} with L2-normalized rows in input order, 404 for an unknown model.
Vectors come from a real embedder the test registers with `add_embedding_model`.

`render(template, system, messages)` renders the TEMPLATE; tests pass a Go text/template
renderer when Go is installed, else the exporter's Python mirror of our Go templates.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
CREATE_FIELDS = {
    "model": str,
    "from": str,
    "files": dict,
    "adapters": dict,
    "template": str,
    "license": (str, list),
    "system": str,
    "parameters": dict,
    "messages": list,
    "stream": bool,
    "quantize": str,
}
Render = Callable[[str, list[dict[str, str]]], str]


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class FakeOllama:
    def __init__(self, root: Path, render: Render) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.models: dict[str, dict[str, Any]] = {}
        self.render = render
        self.requests: list[tuple[str, str]] = []
        self._llms: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.embedding_models: dict[str, Callable[[list[str]], Any]] = {}
        self.embed_batches: list[int] = []  # inputs per /api/embed request
        self._contexts: dict[str, int] = {}

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self, port: int = 0) -> str:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _dispatch(self, method: str) -> None:
                fake.requests.append((method, self.path))
                try:
                    status, body, stream = fake.handle(method, self.path, self)
                except HttpError as e:
                    err: Any = {"error": e.message}
                    if self.path.startswith("/v1/"):
                        err = {"error": {"message": e.message, "type": "api_error"}}
                    status, body, stream = e.status, err, False
                if method == "HEAD":
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if stream:
                    data = b"".join(json.dumps(b).encode() + b"\n" for b in body)
                    ctype = "application/x-ndjson"
                else:
                    data = json.dumps(body).encode() if body is not None else b""
                    ctype = "application/json; charset=utf-8"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_HEAD(self) -> None:
                self._dispatch("HEAD")

            def do_GET(self) -> None:
                self._dispatch("GET")

            def do_POST(self) -> None:
                self._dispatch("POST")

            def do_DELETE(self) -> None:
                self._dispatch("DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    # ---- request plumbing ----------------------------------------------------------------
    @staticmethod
    def _body(h: BaseHTTPRequestHandler) -> bytes:
        if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(h.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    h.rfile.readline()
                    return bytes(out)
                out += h.rfile.read(size)
                h.rfile.readline()
        n = int(h.headers.get("Content-Length") or 0)
        return h.rfile.read(n) if n else b""

    def _json(self, h: BaseHTTPRequestHandler) -> dict[str, Any]:
        try:
            data = json.loads(self._body(h) or b"{}")
        except ValueError as e:
            raise HttpError(400, f"invalid JSON: {e}") from e
        if not isinstance(data, dict):
            raise HttpError(400, "request body must be a JSON object")
        return data

    def handle(self, method: str, path: str, h: BaseHTTPRequestHandler) -> tuple[int, Any, bool]:
        if path.startswith("/api/blobs/"):
            digest = path[len("/api/blobs/") :]
            if not DIGEST.match(digest):
                raise HttpError(400, "invalid digest format")
            blob = self.blobs / digest.replace(":", "-")
            if method == "HEAD":
                return (200 if blob.is_file() else 404), None, False
            if method == "POST":
                data = self._body(h)
                if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
                    raise HttpError(400, "digest mismatch, file must be downloaded again")
                blob.write_bytes(data)
                return 201, None, False
        routes = {
            ("POST", "/api/create"): self.create,
            ("GET", "/api/tags"): self.tags,
            ("POST", "/api/show"): self.show,
            ("POST", "/api/generate"): self.generate,
            ("POST", "/api/chat"): self.chat,
            ("POST", "/api/embed"): self.embed,
            ("GET", "/v1/models"): self.openai_models,
            ("POST", "/v1/chat/completions"): self.openai_chat,
        }
        fn = routes.get((method, path))
        if fn is None:
            raise HttpError(404, f"{method} {path} not found")
        req = self._json(h) if method == "POST" else {}
        return fn(req)

    # ---- endpoints -------------------------------------------------------------------
    def _blob(self, name: str, digest: Any) -> Path:
        if not isinstance(digest, str) or not DIGEST.match(digest):
            raise HttpError(400, f"invalid digest for {name}")
        p = self.blobs / digest.replace(":", "-")
        if not p.is_file():
            raise HttpError(400, f"blob {digest} for {name} not found; push it first")
        if name.endswith(".gguf") and p.open("rb").read(4) != b"GGUF":
            raise HttpError(400, f"{name} is not a GGUF file")
        return p

    def create(self, req: dict[str, Any]) -> tuple[int, Any, bool]:
        for k, v in req.items():
            want = CREATE_FIELDS.get(k)
            if want is not None and not isinstance(v, want):
                raise HttpError(400, f"field {k} has the wrong type")
        name = req.get("model")
        if not name:
            raise HttpError(400, "model is required")
        files = req.get("files") or {}
        if not files and not req.get("from"):
            raise HttpError(400, "neither 'from' or 'files' was specified")
        gguf = [self._blob(n, d) for n, d in files.items()]
        adapters = [self._blob(n, d) for n, d in (req.get("adapters") or {}).items()]
        if len(adapters) > 1:
            raise HttpError(400, "this fake applies one adapter per model")
        if adapters and adapters[0].open("rb").read(4) != b"GGUF":
            raise HttpError(400, "an adapter must be a GGUF LoRA")
        params = req.get("parameters") or {}
        stop = params.get("stop", [])
        if isinstance(stop, str):
            stop = [stop]
        if not all(isinstance(s, str) for s in stop):
            raise HttpError(400, "parameter stop must be strings")
        for m in req.get("messages") or []:
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
                raise HttpError(400, "invalid message")
        with self._lock:
            self.models[self._full(name)] = {
                "name": self._full(name),
                "gguf": gguf[0] if gguf else None,
                "adapters": adapters,
                "template": req.get("template") or "{{ .Prompt }}",
                "system": req.get("system") or "",
                "parameters": {**params, "stop": stop},
                "messages": req.get("messages") or [],
                "modified_at": time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime()),
            }
        status = [
            {"status": "parsing GGUF"},
            *({"status": f"using existing layer {d}"} for d in files.values()),
            {"status": "writing manifest"},
            {"status": "success"},
        ]
        if req.get("stream", True):
            return 200, status, True
        return 200, status[-1], False

    def add_embedding_model(
        self, name: str, encode: Callable[[list[str]], Any], context: int = 512
    ) -> None:
        """`encode(texts)` -> a (n, d) array; `context`: characters the model takes (a
        stand-in for its token window, for `truncate`)."""
        self.embedding_models[self._full(name)] = encode
        self._contexts[self._full(name)] = context

    def embed(self, req: dict[str, Any]) -> tuple[int, Any, bool]:
        name, inp = req.get("model"), req.get("input")
        if not isinstance(name, str) or not name:
            raise HttpError(400, "model is required")
        if inp is None:
            raise HttpError(400, "input is required")
        texts = [inp] if isinstance(inp, str) else inp
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise HttpError(400, "invalid input type")
        for key, want in (("truncate", bool), ("dimensions", int), ("options", dict)):
            if key in req and not isinstance(req[key], want):
                raise HttpError(400, f"field {key} has the wrong type")
        encode = self.embedding_models.get(self._full(name))
        if encode is None and self._full(name) in self.models:
            encode = self._gguf_embedder(self.models[self._full(name)])
        if encode is None:
            raise HttpError(404, f'model "{name}" not found, try pulling it first')
        context = self._contexts.get(self._full(name), 1 << 30)
        if not req.get("truncate", True) and any(len(t) > context for t in texts):
            raise HttpError(400, "input length exceeds maximum context length")
        t0 = time.perf_counter_ns()
        vecs = [list(map(float, v)) for v in encode([t[:context] for t in texts])] if texts else []
        dims = req.get("dimensions")
        if dims:
            vecs = [v[:dims] for v in vecs]
        vecs = [[x / (sum(y * y for y in v) ** 0.5 or 1.0) for x in v] for v in vecs]
        with self._lock:
            self.embed_batches.append(len(texts))
        return (
            200,
            {
                "model": name,
                "embeddings": vecs,
                "total_duration": time.perf_counter_ns() - t0,
                "load_duration": 0,
                "prompt_eval_count": sum(len(t.split()) for t in texts),
            },
            False,
        )

    def _gguf_embedder(self, m: dict[str, Any]) -> Callable[[list[str]], Any]:
        """A created model's GGUF run by llama.cpp in embedding mode, its context from the
        Modelfile's num_ctx (Ollama's default 2048 otherwise), inputs truncated to it."""
        key = f"embed:{m['name']}"
        if key not in self._llms:
            from llama_cpp import Llama

            n_ctx = int(m["parameters"].get("num_ctx", 2048))
            self._llms[key] = Llama(
                model_path=str(m["gguf"]),
                embedding=True,
                n_ctx=n_ctx,
                n_batch=n_ctx,
                n_ubatch=n_ctx,
                verbose=False,
            )
        llm = self._llms[key]
        return lambda texts: [llm.embed(t, normalize=True, truncate=True) for t in texts]

    @staticmethod
    def _full(name: str) -> str:
        return name if ":" in name else f"{name}:latest"

    def _model(self, name: Any) -> dict[str, Any]:
        if not isinstance(name, str) or self._full(name) not in self.models:
            raise HttpError(404, f"model '{name}' not found")
        return self.models[self._full(name)]

    def tags(self, _: dict[str, Any]) -> tuple[int, Any, bool]:
        out = []
        for m in self.models.values():
            size = m["gguf"].stat().st_size if m["gguf"] else 0
            out.append(
                {
                    "name": m["name"],
                    "model": m["name"],
                    "modified_at": m["modified_at"],
                    "size": size,
                    "digest": hashlib.sha256(m["name"].encode()).hexdigest(),
                    "details": {
                        "format": "gguf",
                        "family": "llama",
                        "families": None,
                        "parameter_size": "",
                        "quantization_level": "",
                    },
                }
            )
        return 200, {"models": out}, False

    def show(self, req: dict[str, Any]) -> tuple[int, Any, bool]:
        m = self._model(req.get("model"))
        params = "\n".join(f'stop "{s}"' for s in m["parameters"]["stop"])
        return (
            200,
            {
                "modelfile": f'FROM {m["gguf"]}\nTEMPLATE """{m["template"]}"""\n',
                "parameters": params,
                "template": m["template"],
                "system": m["system"],
                "details": {"parent_model": "", "format": "gguf", "family": "llama"},
                "model_info": {"general.architecture": "llama"},
                "modified_at": m["modified_at"],
            },
            False,
        )

    def _generate(self, m: dict[str, Any], msgs: list[dict[str, str]], opts: dict[str, Any]) -> Any:
        from llama_cpp import Llama

        prompt = self.render(m["template"], msgs)
        lora = str(m["adapters"][0]) if m["adapters"] else None
        key = f"{m['gguf']}+{lora}"
        with self._lock:
            llm = self._llms.get(key)
            if llm is None:  # the model's ADAPTER applied by llama.cpp, as Ollama does
                llm = Llama(
                    model_path=str(m["gguf"]),
                    lora_path=lora,
                    n_ctx=1024,
                    n_threads=2,
                    verbose=False,
                )
                self._llms[key] = llm
            stop = [*m["parameters"]["stop"], *(opts.get("stop") or [])]
            out = llm.create_completion(
                prompt,
                max_tokens=int(opts.get("num_predict", 128)),
                temperature=float(opts.get("temperature", 0.8)),
                stop=stop or None,
            )
        choice = out["choices"][0]
        return prompt, choice["text"], choice["finish_reason"], out["usage"]

    def _msgs_for(self, m: dict[str, Any], msgs: list[dict[str, str]], system: str | None):
        # routes.go: Modelfile MESSAGEs first; SYSTEM prepended unless one is given
        out = [*m["messages"], *msgs]
        sys_text = system if system else m["system"]
        if sys_text and not (msgs and msgs[0]["role"] == "system"):
            out = [{"role": "system", "content": sys_text}, *out]
        return out

    def generate(self, req: dict[str, Any]) -> tuple[int, Any, bool]:
        m = self._model(req.get("model"))
        if not isinstance(req.get("prompt", ""), str):
            raise HttpError(400, "prompt must be a string")
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if not req.get("prompt"):
            return (
                200,
                {"model": req["model"], "created_at": now, "response": "", "done": True},
                False,
            )
        msgs = self._msgs_for(m, [{"role": "user", "content": req["prompt"]}], req.get("system"))
        _, text, reason, usage = self._generate(m, msgs, req.get("options") or {})
        final = {
            "model": req["model"],
            "created_at": now,
            "response": text,
            "done": True,
            "done_reason": "stop" if reason == "stop" else "length",
            "prompt_eval_count": usage["prompt_tokens"],
            "eval_count": usage["completion_tokens"],
        }
        if req.get("stream", True):
            return (
                200,
                [{**final, "done": False, "done_reason": None}, {**final, "response": ""}],
                True,
            )
        return 200, final, False

    def chat(self, req: dict[str, Any]) -> tuple[int, Any, bool]:
        m = self._model(req.get("model"))
        msgs = req.get("messages")
        if not isinstance(msgs, list):
            raise HttpError(400, "messages must be a list")
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        _, text, reason, usage = self._generate(
            m, self._msgs_for(m, msgs, None), req.get("options") or {}
        )
        final = {
            "model": req["model"],
            "created_at": now,
            "message": {"role": "assistant", "content": text},
            "done": True,
            "done_reason": "stop" if reason == "stop" else "length",
            "prompt_eval_count": usage["prompt_tokens"],
            "eval_count": usage["completion_tokens"],
        }
        return 200, final, False

    # ---- OpenAI compatibility ---------------------------------------------------------
    def openai_models(self, _: dict[str, Any]) -> tuple[int, Any, bool]:
        data = [
            {"id": m["name"], "object": "model", "created": 0, "owned_by": "library"}
            for m in self.models.values()
        ]
        return 200, {"object": "list", "data": data}, False

    def openai_chat(self, req: dict[str, Any]) -> tuple[int, Any, bool]:
        name = req.get("model")
        if not isinstance(name, str) or self._full(name) not in self.models:
            raise HttpError(404, f'model "{name}" not found, try pulling it first')
        if req.get("stream"):
            raise HttpError(400, "this fake does not stream /v1/chat/completions")
        msgs = req.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise HttpError(400, "invalid message format")
        m = self.models[self._full(name)]
        flat = [{"role": str(x.get("role")), "content": str(x.get("content"))} for x in msgs]
        stop = req.get("stop") or []
        opts = {
            "temperature": req.get("temperature", 1.0),
            "num_predict": req.get("max_tokens") or req.get("max_completion_tokens") or 128,
            "stop": [stop] if isinstance(stop, str) else stop,
        }
        _, text, reason, usage = self._generate(m, self._msgs_for(m, flat, None), opts)
        return (
            200,
            {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": name,
                "system_fingerprint": "fp_ollama",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop" if reason == "stop" else "length",
                    }
                ],
                "usage": {
                    "prompt_tokens": usage["prompt_tokens"],
                    "completion_tokens": usage["completion_tokens"],
                    "total_tokens": usage["total_tokens"],
                },
            },
            False,
        )
