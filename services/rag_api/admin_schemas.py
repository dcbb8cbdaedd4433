"""Request and response models of the admin endpoints (registry, reports, datasets, jobs).

They exist mainly for the OpenAPI schema: the UI and any other client can see exactly
what each endpoint returns. Free-form parts (meta.json, metrics, export rows) stay dicts
because they are written by other services whose fields grow over time.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

JobStatus = Literal["queued", "running", "done", "failed"]


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
