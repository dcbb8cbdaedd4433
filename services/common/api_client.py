"""The one client of the RAG API: typed, synchronous, shared by the CLI, the converter's
RAG API switch and the UI.

Responses are parsed into the API's own models (services.common.api_schemas), so a field
the API renames breaks here, in one place, instead of in three hand-written clients.
Every failure becomes an ApiError carrying the API's message and hint (the API never
sends tracebacks); ApiUnreachable means nothing answered at all, which callers like
`llm deploy` treat as "no API running" rather than as a failure.

Needs only httpx and pydantic: the UI image (no torch, no FastAPI) imports it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from services.common.api_schemas import (
    ChatAnswer,
    ChatRequest,
    CollectionDeleted,
    CollectionsResponse,
    DatasetsResponse,
    DatasetUploaded,
    DeployRequest,
    EvalJobRequest,
    IngestResponse,
    JobInfo,
    JobsResponse,
    LlmSwitch,
    LlmTargetInfo,
    ModelDetail,
    ModelList,
    ModelsResponse,
    RagEvalJobRequest,
    ReindexJobRequest,
    ReindexRequest,
    ReindexResponse,
    ReportDetail,
    ReportsResponse,
    RetrievalInfo,
    RetrieveRequest,
    RetrieveResponse,
    Source,
    SwitchResponse,
    TuneJobRequest,
    WhoAmI,
)
from services.common.errors import TunestackError

M = TypeVar("M", bound=BaseModel)
START_HINT = "Start the stack: `tunestack up` (or set TUNESTACK_API_URL to where it runs)."


class ApiError(TunestackError):
    """The API refused or failed a request; message and hint come from its JSON body."""

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        status: int | None = None,
        service: str | None = None,
    ) -> None:
        super().__init__(message, hint)
        self.status = status
        self.service = service
        if status:
            self.status_code = status

    def __str__(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message


class ApiDown(ApiError):
    """The API, or a service behind it (service='chroma' | 'llm'), is unavailable."""

    status_code = 503


class ApiUnreachable(ApiDown):
    """Nothing answered at the API's address (connection refused, DNS, ...)."""


class RagClient:
    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self._http: httpx.Client | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    @property
    def http(self) -> httpx.Client:
        """One pooled connection per client: a UI page makes several calls per rerun."""
        if self._http is None:
            self._http = httpx.Client(base_url=self.base_url, headers=self.headers)
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def __enter__(self) -> RagClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- plumbing -----------------------------------------------------------------------
    def request(
        self, method: str, path: str, *, timeout: float | None = None, **kw: Any
    ) -> httpx.Response:
        t = self.timeout if timeout is None else timeout
        try:
            r = self.http.request(method, path, timeout=t, **kw)
        except httpx.TimeoutException as e:
            raise ApiError(
                f"The RAG API did not answer {method} {path} within {t:.0f}s.",
                hint="It may be busy (ingest, reindex, evaluation); try again shortly.",
            ) from e
        except httpx.HTTPError as e:
            raise ApiUnreachable(
                f"The RAG API is not reachable at {self.base_url} ({type(e).__name__}).",
                hint=START_HINT,
                service="rag-api",
            ) from e
        if r.status_code >= 400:
            raise error_from(r)
        return r

    def get_json(self, path: str, *, timeout: float | None = None, **kw: Any) -> Any:
        return self.request("GET", path, timeout=timeout, **kw).json()

    def post_json(self, path: str, *, timeout: float | None = None, **kw: Any) -> Any:
        return self.request("POST", path, timeout=timeout, **kw).json()

    def get_bytes(self, path: str, *, timeout: float | None = None) -> bytes:
        return self.request("GET", path, timeout=timeout).content

    def _get(self, model: type[M], path: str, **kw: Any) -> M:
        return model.model_validate(self.get_json(path, **kw))

    def _post(self, model: type[M], path: str, body: BaseModel | None = None, **kw: Any) -> M:
        if body is not None:
            kw["json"] = body.model_dump(exclude_none=True)
        return model.model_validate(self.post_json(path, **kw))

    # ---- health ---------------------------------------------------------------------------
    def readiness(self) -> dict[str, Any]:
        """{'api': bool, 'auth': bool, 'checks': {...}}; never raises (a banner uses it)."""
        try:
            r = self.http.get("/readyz", timeout=6.0)
            body = r.json()
        except (httpx.HTTPError, ValueError):
            return {"api": False, "auth": True, "checks": {}}
        if r.status_code in (401, 403):
            return {"api": True, "auth": False, "checks": {}}
        return {"api": True, "auth": True, "checks": body.get("checks", {})}

    def whoami(self) -> WhoAmI:
        """The key this client sends, its name and role (401 ApiError: missing or unknown;
        auth false: the API has no keys and anyone may do anything)."""
        return self._get(WhoAmI, "/v1/whoami")

    # ---- documents and retrieval ----------------------------------------------------------
    def retrieve(self, req: RetrieveRequest, *, timeout: float | None = None) -> RetrieveResponse:
        return self._post(RetrieveResponse, "/v1/retrieve", req, timeout=timeout)

    def ingest(
        self,
        files: list[tuple[str, bytes]],
        collection: str,
        *,
        embedder: str | None = None,
        timeout: float | None = None,
    ) -> IngestResponse:
        data = {"collection": collection, **({"embedder": embedder} if embedder else {})}
        parts = [("files", (name, content)) for name, content in files]
        return IngestResponse.model_validate(
            self.post_json("/v1/ingest", data=data, files=parts, timeout=timeout)
        )

    def collections(self) -> CollectionsResponse:
        return self._get(CollectionsResponse, "/v1/collections")

    def delete_collection(self, name: str) -> CollectionDeleted:
        return CollectionDeleted.model_validate(
            self.request("DELETE", f"/v1/collections/{name}", timeout=60).json()
        )

    def reindex(self, collection: str, embedder: str) -> ReindexResponse:
        return self._post(
            ReindexResponse,
            f"/v1/collections/{collection}/reindex",
            ReindexRequest(embedder=embedder),
            timeout=3600,
        )

    # ---- answers -----------------------------------------------------------------------------
    def chat_completion(self, req: ChatRequest, *, timeout: float | None = None) -> dict[str, Any]:
        """The OpenAI chat.completion as the API sent it (with `sources`, `retrieval`)."""
        body = req.model_dump(exclude_none=True) | {"stream": False}
        data: dict[str, Any] = self.post_json("/v1/chat/completions", json=body, timeout=timeout)
        return data

    def chat(self, req: ChatRequest, *, timeout: float | None = None) -> ChatAnswer:
        return parse_completion(self.chat_completion(req, timeout=timeout))

    def stream_chat(self, req: ChatRequest, *, timeout: float | None = None) -> Iterator[dict]:
        """Parsed SSE chunks of an answer (the first one carries `sources`); an error event
        from the API is raised as ApiError/ApiDown."""
        body = req.model_dump(exclude_none=True) | {"stream": True}
        try:
            with self.http.stream(
                "POST", "/v1/chat/completions", json=body, timeout=timeout or self.timeout
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

    def served_models(self) -> ModelList:
        """GET /v1/models: rag/<collection> models, the LLM server's models, embedders."""
        return self._get(ModelList, "/v1/models")

    # ---- the serving LLM ------------------------------------------------------------------
    def current_llm(self) -> LlmTargetInfo:
        return self._get(LlmTargetInfo, "/v1/admin/llm")

    def switch_llm(self, req: LlmSwitch) -> SwitchResponse:
        return self._post(SwitchResponse, "/v1/admin/llm", req, timeout=180)

    # ---- registry, reports, datasets ---------------------------------------------------------
    def models(self, kind: str | None = None) -> ModelsResponse:
        return self._get(
            ModelsResponse, "/v1/registry/models", params={"kind": kind} if kind else {}
        )

    def model(self, kind: str, name: str) -> ModelDetail:
        return self._get(ModelDetail, f"/v1/registry/models/{kind}/{name}")

    def reports(self, limit: int = 50) -> ReportsResponse:
        return self._get(ReportsResponse, "/v1/reports", params={"limit": limit})

    def report(self, name: str) -> ReportDetail:
        return self._get(ReportDetail, f"/v1/reports/{name}")

    def datasets(self) -> DatasetsResponse:
        return self._get(DatasetsResponse, "/v1/datasets")

    def upload_dataset(self, name: str, content: bytes) -> DatasetUploaded:
        return DatasetUploaded.model_validate(
            self.post_json("/v1/datasets", files={"file": (name, content)}, timeout=120)
        )

    # ---- jobs ---------------------------------------------------------------------------------
    def start_eval(self, req: EvalJobRequest) -> JobInfo:
        return self._post(JobInfo, "/v1/jobs/eval", req)

    def start_rag_eval(self, req: RagEvalJobRequest) -> JobInfo:
        return self._post(JobInfo, "/v1/jobs/rag-eval", req, timeout=60)

    def start_reindex(self, req: ReindexJobRequest) -> JobInfo:
        return self._post(JobInfo, "/v1/jobs/reindex", req)

    def start_tune(self, req: TuneJobRequest) -> JobInfo:
        return self._post(JobInfo, "/v1/jobs/tune", req)

    def deploy(self, run: str, req: DeployRequest) -> JobInfo:
        return self._post(JobInfo, f"/v1/registry/models/llm/{run}/deploy", req)

    def job(self, job_id: str) -> JobInfo:
        return self._get(JobInfo, f"/v1/jobs/{job_id}")

    def jobs(self) -> JobsResponse:
        return self._get(JobsResponse, "/v1/jobs")


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


def parse_completion(data: dict[str, Any]) -> ChatAnswer:
    """A RAG chat.completion as a ChatAnswer: the text, its cited sources, usage."""
    choice = (data.get("choices") or [{}])[0]
    retrieval = data.get("retrieval")
    return ChatAnswer(
        content=str((choice.get("message") or {}).get("content") or ""),
        sources=[Source.model_validate(s) for s in data.get("sources") or []],
        usage=data.get("usage") or {},
        retrieval=RetrievalInfo.model_validate(retrieval) if retrieval else None,
        finish_reason=choice.get("finish_reason"),
    )
