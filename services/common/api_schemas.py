"""The RAG API's request and response models, shared by the server and its client.

One definition serves three purposes: FastAPI validates requests and publishes the
OpenAPI schema from them, and services.common.api_client parses responses into them, so
the CLI, the converter's switch and the UI read exactly what the API writes. Pydantic only:
importing this needs neither torch nor FastAPI (the UI image has neither).

OpenAI-shaped request bodies allow extra fields, as OpenAI clients send many. Request
bodies are validated strictly (no "5" for 5, no 0 for false): the published schema says
exactly what is accepted, and `make test-reliability` fuzzes the API against it. Free-form
parts of registry answers (meta.json, metrics) stay dicts: other services write them and
their fields grow over time.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

STRICT = ConfigDict(strict=True)
# OpenAI-shaped bodies: strict, and extra fields are kept (clients send many)
OPENAI_BODY = ConfigDict(strict=True, extra="allow")

# What services.rag_api.store.validate_collection_name accepts: 1-62 letters, digits, '.',
# '_', '-', starting and ending with a letter or digit, no '__'. The server checks it (and
# says the rule in words); the schema documents it.
COLLECTION_NAME: dict[str, Any] = {
    "pattern": r"^[A-Za-z0-9](?:(?:_?[.-])*_?[A-Za-z0-9])*$",
    "minLength": 1,
    "maxLength": 62,
}
NOT_BLANK: dict[str, Any] = {"pattern": r"\S"}  # checked by the server ("The query is empty.")

JobStatus = Literal["queued", "running", "done", "failed", "interrupted"]
RetrievalMode = Literal["dense", "bm25", "hybrid"]


# ---- documents and retrieval ----------------------------------------------------------------


class RetrieveRequest(BaseModel):
    model_config = STRICT
    collection: str = Field(json_schema_extra=COLLECTION_NAME)
    query: str = Field(json_schema_extra=NOT_BLANK)
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
    best_dense: float | None = Field(
        None, description="The best cosine similarity dense search found (null in bm25 mode)."
    )
    min_relevance: float | None = Field(
        None,
        description="The build's relevance gate: an answer whose best_dense is below it is "
        "'not in the documents' without asking the LLM (`tunestack rag calibrate`); null: off.",
    )
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
    warnings: list[str] = Field(
        default_factory=list, description="Things that work but will not work well."
    )


class BuildInfo(BaseModel):
    embedder: str
    embedder_fp: str
    chunks: int
    created: str | None = None
    stale: str | None = Field(
        None,
        description="Why this build lacks documents another build of the collection has "
        "(an ingest changed that one); null when it is up to date. "
        "`tunestack reindex NAME --embedder EMBEDDER` brings it up to date.",
    )


class CollectionInfo(BaseModel):
    name: str
    builds: list[BuildInfo]


class CollectionsResponse(BaseModel):
    collections: list[CollectionInfo]


class CollectionDeleted(BaseModel):
    deleted: str
    builds: int


class ReindexRequest(BaseModel):
    model_config = STRICT
    embedder: str


class ReindexResponse(BaseModel):
    collection: str
    embedder: str
    chunks: int


class RelevanceRequest(BaseModel):
    model_config = STRICT
    dataset: str | None = Field(
        None,
        description="A registered dataset (GET /v1/datasets) of questions these documents "
        "answer; null with off=true.",
    )
    embedder: str | None = Field(None, description="The build to set (default: the collection's).")
    false_abstention: float = Field(
        0.05, gt=0, lt=0.5, description="Share of the dataset's questions the gate may turn away."
    )
    off: bool = Field(False, description="Turn the build's gate off instead.")


class RelevanceResponse(BaseModel):
    collection: str
    embedder: str
    min_relevance: float | None = Field(description="The stored threshold; null: the gate is off.")
    questions: int = 0
    skipped: int = 0
    false_abstention: float | None = None
    best_similarity: dict[str, float] | None = None


# ---- OpenAI-compatible -----------------------------------------------------------------------


ChatRole = Literal["system", "user", "assistant", "tool"]


class TextPart(BaseModel):
    """A text part of a message's content (OpenAI's list form); the LLMs served here read
    text only."""

    model_config = OPENAI_BODY
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """An OpenAI chat message, checked as the LLM server checks it: a known role and its
    content (a string or text parts); a `tool` message also names its tool_call_id."""

    model_config = ConfigDict(
        strict=True,
        extra="allow",
        json_schema_extra={
            "if": {"properties": {"role": {"const": "tool"}}, "required": ["role"]},
            "then": {"required": ["tool_call_id"]},
        },
    )
    role: ChatRole
    content: str | list[TextPart]
    name: str | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _tool_call_id(self) -> ChatMessage:
        if self.role == "tool" and self.tool_call_id is None:
            raise ValueError("a tool message needs tool_call_id")
        return self


class ChatRequest(BaseModel):
    """OpenAI chat.completions body plus Tunestack's retrieval options for rag/* models."""

    model_config = OPENAI_BODY
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
    min_relevance: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="rag/* only: the relevance gate for this answer; a question whose best "
        "passage is less similar is answered 'not in the documents' without the LLM. "
        "0 turns it off; default: the build's (`tunestack rag calibrate`).",
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


# Per-request caps of POST /v1/embeddings: the worst request is 2,048 x 32,768 characters
# (64M characters to tokenize; the body limit, TUNESTACK_RAG_MAX_UPLOAD_MB, usually bites
# first). OpenAI's own limits are 2,048 inputs of at most 8,192 tokens.
MAX_EMBED_INPUTS = 2048
MAX_EMBED_INPUT_CHARS = 32_768
EmbedText = Annotated[str, Field(max_length=MAX_EMBED_INPUT_CHARS)]


def _input_kind(v: Any) -> str:
    """Which branch of `input` to validate, so a 422 names that branch's problem only."""
    return "list" if isinstance(v, list) else "str"


EmbedInput = Annotated[
    Annotated[EmbedText, Tag("str")]
    | Annotated[list[EmbedText], Field(min_length=1, max_length=MAX_EMBED_INPUTS), Tag("list")],
    Discriminator(_input_kind),
]


class EmbeddingsRequest(BaseModel):
    model_config = OPENAI_BODY
    model: str
    input: EmbedInput = Field(
        description=f"A string or a list of 1-{MAX_EMBED_INPUTS} strings, each at most "
        f"{MAX_EMBED_INPUT_CHARS:,} characters."
    )
    encoding_format: Literal["float", "base64"] = "float"


# ---- the serving LLM ----------------------------------------------------------------------------


class LlmSwitch(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # an `api_key` field is refused

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
    kind: Literal["embed-eval", "rag-eval"] = Field(
        default="embed-eval", description="embed-eval: retrieval per embedder; rag-eval: answers."
    )
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
    model_config = STRICT
    dataset: str = Field(description="A name from GET /v1/datasets.")
    models: list[str] = Field(
        min_length=1, max_length=6, description="Registered embedders; the first is the baseline."
    )
    top_k: int = Field(default=10, ge=1, le=100, description="k of MRR@k.")


# a model name as servers and the registry spell them (Ollama: name:tag, hub ids: org/name)
ModelName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")]


class RagEvalJobRequest(BaseModel):
    """`tunestack rag eval` as a job: every LLM x embedder x mode over a registered dataset."""

    model_config = STRICT
    dataset: str = Field(
        description="A name from GET /v1/datasets: SQuAD/CMRC JSON, EmbeddingQA JSON with "
        "'answers', or JSONL."
    )
    collection: str = Field(json_schema_extra=COLLECTION_NAME)
    llms: list[ModelName] = Field(
        default_factory=list,
        max_length=4,
        description="Models served by the configured LLM servers (empty: the serving one).",
    )
    embedders: list[ModelName] = Field(
        default_factory=list,
        max_length=4,
        description="Embedders the collection is built for (empty: its default build).",
    )
    modes: list[RetrievalMode] = Field(default=["dense"], min_length=1, max_length=3)
    top_k: int = Field(default=4, ge=1, le=20)
    max_tokens: int | None = Field(
        default=None, ge=1, le=2048, description="Longest answer (default: the API's)."
    )
    limit: int | None = Field(default=20, ge=1, le=5000, description="The first N questions.")
    unanswerable: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="Add N questions whose passage is not in the collection.",
    )
    resume: bool = Field(default=False, description="Continue the same run that was interrupted.")
    judge: ModelName | None = Field(
        default=None,
        description="A model on a configured LLM server that grades each answer "
        "(correctness, groundedness); off when absent.",
    )


class ReindexJobRequest(BaseModel):
    model_config = STRICT
    collection: str = Field(json_schema_extra=COLLECTION_NAME)
    embedder: str


# a registry name: what `tunestack` accepts for a new embedder or run (services.common.registry)
RegistryName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]


class TuneJobRequest(BaseModel):
    """`tunestack embed tune` as a job, on a collection's own chunks or on a QA dataset."""

    model_config = STRICT
    name: RegistryName = Field(description="The tuned embedder's registry name.")
    base: str = Field(default="all-minilm-l6-v2", description="A registered embedder to tune.")
    collection: str | None = Field(
        default=None,
        json_schema_extra=COLLECTION_NAME,
        description="Tune on this collection's stored chunks, with pseudo-queries made "
        "offline from them (as `embed tune --corpus`). Give this or `dataset`.",
    )
    dataset: str | None = Field(
        default=None,
        description="Or a name from GET /v1/datasets: EmbeddingQA/SQuAD JSON with the "
        "queries to train on (as `embed tune --pairs`).",
    )
    validation: str | None = Field(
        default=None,
        description="A name from GET /v1/datasets to measure MRR@10 on before and after "
        "(default: queries split from the training data).",
    )
    epochs: float | None = Field(default=None, gt=0, le=50)
    batch_size: int | None = Field(default=None, ge=2, le=1024)
    lr: float | None = Field(default=None, ge=0, le=1e-2)
    loss: Literal["mnrl", "cached-mnrl", "triplet", "cosent"] | None = None
    hard_negatives: int = Field(default=0, ge=0, le=10)
    reindex: bool = Field(
        default=True,
        description="With `collection`: build that collection for the tuned embedder when "
        "tuning ends, so it can be compared with the base at once.",
    )
    overwrite: bool = Field(default=False, description="Replace an embedder of that name.")


class TrainJobRequest(BaseModel):
    """`tunestack llm train` as a job: LLaMA-Factory's keys as a JSON object."""

    model_config = STRICT
    run_name: RegistryName = Field(description="The run's registry name.")
    config: dict[str, Any] = Field(
        description="LLaMA-Factory training keys, as in a YAML file for `tunestack llm "
        "train` (model_name_or_path: a registered or bundled base; dataset: names in "
        "TUNESTACK_HOME/llm-data/dataset_info.json). Keys that name server files or run "
        "code (dataset_dir, output_dir, logging_dir, deepspeed, fsdp_config, ref_model, "
        "a resume_from_checkpoint path, trust_remote_code) are refused: use the CLI for those."
    )


class DeployRequest(BaseModel):
    model_config = STRICT
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
    kind: Literal["eval", "reindex", "deploy", "rag-eval", "ingest", "tune", "train"]
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
    attempts: int = Field(
        default=0,
        description="Runs started: 2 or more when a queue worker died and another ran it again.",
    )


class JobsResponse(BaseModel):
    jobs: list[JobInfo]


ERROR_TEXT = {
    400: "The body could not be parsed (not JSON, or broken multipart).",
    401: "Missing or unknown API key.",
    403: "The key's role may not do this, or a browser page of another site sent it.",
    404: "Not found (the message lists what exists).",
    409: "Valid, but not in the current state (the hint says what to do first).",
    413: "The request body is larger than TUNESTACK_RAG_MAX_UPLOAD_MB.",
    422: "Invalid input.",
    429: "Too many requests or jobs for this key (see Retry-After).",
    502: "The LLM server failed on this request.",
    503: "Chroma or the LLM server is down; 'service' says which.",
    504: "The LLM server answered too slowly.",
    507: "The disk holding TUNESTACK_HOME is full (the message names the folder).",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for error codes, each with the one error shape (ErrorBody)."""
    return {c: {"model": ErrorBody, "description": ERROR_TEXT[c]} for c in codes}


ERRORS = error_responses(404, 422, 503)
# what the guard answers before a route runs (services.rag_api.security), on every route
# that needs a key
GUARD_ERRORS = error_responses(401, 403, 429)
# what any route with a request body may answer before validation
BODY_ERRORS = error_responses(400, 413, 422)
