"""The RAG API's request and response models, shared by the server and its client.

One definition serves three purposes: FastAPI validates requests and publishes the
OpenAPI schema from them, and services.common.api_client parses responses into them, so
the CLI, the converter's switch and the UI read exactly what the API writes. Pydantic only:
importing this needs neither torch nor FastAPI (the UI image has neither).

OpenAI-shaped request bodies allow extra fields, as OpenAI clients send many. Free-form
parts of registry answers (meta.json, metrics) stay dicts: other services write them and
their fields grow over time.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JobStatus = Literal["queued", "running", "done", "failed", "interrupted"]
RetrievalMode = Literal["dense", "bm25", "hybrid"]


# ---- documents and retrieval ----------------------------------------------------------------


class RetrieveRequest(BaseModel):
    collection: str
    query: str
    top_k: int = Field(default=4, ge=1, le=100)
    mode: RetrievalMode = "dense"
    embedder: str | None = None


class HitInfo(BaseModel):
    id: str
    text: str
    source: str
    file_name: str
    chunk_index: int
    score: float
    rank: int = 0
    page: str | None = None
    scores: dict[str, float] = Field(default_factory=dict)


class RetrieveResponse(BaseModel):
    collection: str
    embedder: str
    mode: str
    took_ms: float
    hits: list[HitInfo]


class FileStatus(BaseModel):
    path: str
    status: Literal["ok", "unchanged", "failed", "removed", "skipped"]
    chunks: int = 0
    reason: str = ""


class IngestResponse(BaseModel):
    collection: str
    embedder: str
    counts: dict[str, int]
    chunks_written: int
    seconds: float
    files: list[FileStatus]


class BuildInfo(BaseModel):
    embedder: str
    embedder_fp: str
    chunks: int
    created: str | None = None


class CollectionInfo(BaseModel):
    name: str
    builds: list[BuildInfo]


class CollectionsResponse(BaseModel):
    collections: list[CollectionInfo]


class CollectionDeleted(BaseModel):
    deleted: str
    builds: int


class ReindexRequest(BaseModel):
    embedder: str


class ReindexResponse(BaseModel):
    collection: str
    embedder: str
    chunks: int


# ---- OpenAI-compatible -----------------------------------------------------------------------


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: Any = None


class ChatRequest(BaseModel):
    """OpenAI chat.completions body plus Tunestack's retrieval options for rag/* models."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    temperature: float | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=8192)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    top_k: int | None = Field(default=None, ge=1, le=50)
    retrieval_mode: RetrievalMode = "dense"
    embedder: str | None = None
    llm: str | None = Field(
        default=None,
        description="rag/* only: a model the LLM server serves, to answer with instead of "
        "the deployed one (GET /v1/models lists them).",
    )


class Source(BaseModel):
    """A retrieved chunk as a RAG answer cites it: [index] in the answer text."""

    index: int
    id: str
    source: str
    file_name: str
    chunk_index: int
    page: str | None = None
    score: float
    text: str


class RetrievalInfo(BaseModel):
    embedder: str
    mode: str
    took_ms: float


class ChatAnswer(BaseModel):
    """A RAG answer as the typed client returns it (from the OpenAI-shaped response)."""

    content: str
    sources: list[Source]
    usage: dict[str, Any] = Field(default_factory=dict)
    retrieval: RetrievalInfo | None = None
    finish_reason: str | None = None


class ModelCard(BaseModel):
    """One entry of GET /v1/models: rag/<collection>, a model the LLM server serves, or an
    embedder. Lenient (OpenAI clients add fields; an LLM server may omit its own)."""

    model_config = ConfigDict(extra="allow")
    id: str | None = None
    object: str = "model"
    created: int | None = None
    owned_by: str | None = Field(
        default=None, description="tunestack-rag, tunestack-embedder, or the LLM server's."
    )


class ModelList(BaseModel):
    """GET /v1/models, OpenAI's shape."""

    object: str = "list"
    data: list[ModelCard]


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"


# ---- the serving LLM ----------------------------------------------------------------------------


class LlmSwitch(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an `api_key` or other field is refused

    model: str = Field(min_length=1, max_length=200, description="Model the server serves.")
    base_url: str | None = Field(
        default=None,
        max_length=500,
        description="One of the API's configured LLM servers (its /v1 URL); default: the "
        "current one. Any other URL is refused.",
    )
    verify: bool = Field(default=True, description="Check the model answers before switching.")
    run: str | None = Field(default=None, description="Registry run it was deployed from.")


class WhoAmI(BaseModel):
    """GET /v1/whoami: the caller's key (auth false: the API has no keys, all may admin)."""

    id: str
    name: str
    role: Literal["user", "admin"]
    auth: bool


class LlmTargetInfo(BaseModel):
    base_url: str
    model: str


class SwitchResponse(BaseModel):
    previous: LlmTargetInfo
    current: LlmTargetInfo


class HealthCheck(BaseModel):
    model_config = ConfigDict(extra="allow")
    url: str = ""
    ok: bool


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, HealthCheck]


class ErrorBody(BaseModel):
    """What every 4xx/5xx answer carries: never a traceback."""

    error: str
    message: str
    hint: str | None = None
    service: str | None = Field(default=None, description="'chroma' or 'llm' on a 503.")


class ArtifactFile(BaseModel):
    name: str
    size: int = Field(description="Bytes.")
    url: str = Field(description="API path that serves the file (same auth).")


# ---- registry, reports, datasets, jobs ------------------------------------------------------


class ServingInfo(BaseModel):
    llm_model: str = Field(description="The model the RAG chain asks the LLM server for.")
    llm_base_url: str
    default_embedder: str
    deploy_available: bool = Field(
        description="Whether POST .../deploy can deploy to Ollama and switch the LLM."
    )
    deploy_hint: str = Field(
        description="What the API cannot do itself (llama.cpp: the CLI command to run)."
    )
    ollama_host: str = Field(description="The Ollama server a deploy registers models with.")
    max_upload_mb: int = Field(description="Largest upload request the API accepts.")
    max_file_mb: int = Field(description="Larger files are skipped at ingest.")


class ModelSummary(BaseModel):
    kind: Literal["llm", "embedder"]
    name: str
    base_model: str | None = None
    created: str | None = None
    source: str | None = None
    provisioned: bool = Field(description="False for a base model not yet copied in.")
    fingerprint: str | None = None
    deployed: bool = Field(
        description="LLM: the one the RAG chain uses; embedder: the default embedder."
    )
    metrics: dict[str, Any] = Field(default_factory=dict)
    parameters: dict[str, Any] = Field(default_factory=dict)
    files: list[ArtifactFile] = Field(
        default_factory=list, description="Loss curves, trainer logs, *results.json, Modelfile."
    )
    exports: list[dict[str, Any]] = Field(
        default_factory=list, description="GGUF and other exports with sizes, when recorded."
    )
    parity: list[dict[str, Any]] = Field(
        default_factory=list, description="The export parity table, when recorded."
    )
    collections: list[str] = Field(
        default_factory=list, description="Embedders: collections built with it."
    )


class ModelDetail(ModelSummary):
    meta: dict[str, Any] = Field(description="The entry's meta.json as written.")


class ModelsResponse(BaseModel):
    serving: ServingInfo
    models: list[ModelSummary]
    warnings: list[str] = Field(default_factory=list)


class ReportSummary(BaseModel):
    name: str
    created: str | None = None
    dataset: str | None = None
    top_k: int | None = None
    models: dict[str, dict[str, float]] = Field(
        description="Headline metrics per model (hit@k, mrr, ndcg, map)."
    )
    error_reduction: dict[str, float] = Field(default_factory=dict)
    files: list[ArtifactFile] = Field(default_factory=list)


class ReportDetail(ReportSummary):
    report: dict[str, Any] = Field(description="report.json as written.")
    markdown: str = ""


class ReportsResponse(BaseModel):
    reports: list[ReportSummary]


class DatasetInfo(BaseModel):
    name: str = Field(description="Path under TUNESTACK_HOME/datasets, e.g. uploads/kb.json.")
    size: int
    modified: float


class DatasetUploaded(DatasetInfo):
    queries: int
    corpus: int


class DatasetsResponse(BaseModel):
    datasets: list[DatasetInfo]


class EvalJobRequest(BaseModel):
    dataset: str = Field(description="A name from GET /v1/datasets.")
    models: list[str] = Field(
        min_length=1, max_length=6, description="Registered embedders; the first is the baseline."
    )
    top_k: int = Field(default=10, ge=1, le=100, description="k of MRR@k.")


class ReindexJobRequest(BaseModel):
    collection: str
    embedder: str


class DeployRequest(BaseModel):
    to: Literal["ollama", "llamacpp"] = Field(
        default="ollama",
        description="ollama: registered with OLLAMA_HOST, then this API switches to it. "
        "llamacpp: refused with 409 (the API does not own the llama.cpp server; the hint "
        "is the CLI command).",
    )
    quant: str = Field(
        default="q8_0",
        pattern=r"^[A-Za-z0-9_]+$",
        description="Which exported GGUF type (tunestack llm export --quant).",
    )
    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$",
        description="Model name on Ollama (default: the run's name, as the CLI's --name).",
    )


class JobInfo(BaseModel):
    id: str
    kind: Literal["eval", "reindex", "deploy"]
    status: JobStatus
    done: int
    total: int
    progress: float = Field(ge=0, le=1)
    message: str
    params: dict[str, Any]
    result: dict[str, Any] | None = None
    error: ErrorBody | None = None
    created: float
    started: float | None = None
    finished: float | None = None
    resume: str | None = Field(
        default=None, description="The command that does this job again (shown if interrupted)."
    )


class JobsResponse(BaseModel):
    jobs: list[JobInfo]


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in (
        (404, "Not found (the message lists what exists)."),
        (422, "Invalid input."),
        (503, "Chroma or the LLM server is down; 'service' says which."),
    )
}
