"""What the admin endpoints show of the registry, reports and evaluation datasets.

Everything is read from TUNESTACK_HOME through the same Registry the CLI uses, so the UI
shows what exists and nothing else: a run that was never exported has no export rows.
Files are served only through services.rag_api.artifacts, which refuses any name that is
not a known artifact in the entry's folder.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Any, BinaryIO

from services.common.api_schemas import (
    ArtifactFile,
    DatasetInfo,
    DatasetUploaded,
    ModelDetail,
    ModelSummary,
    ReportDetail,
    ReportSummary,
    ServingInfo,
)
from services.common.errors import BadInput, NotFound, TunestackError
from services.common.qa import load_qa
from services.common.records import LlmRecord, Record
from services.common.registry import Listing, dump
from services.rag_api import artifacts
from services.rag_api.context import RagContext
from services.rag_api.rag_eval.datasets import load_dataset
from services.rag_api.uploads import sanitize_filename, save_upload

REPORT_METRICS = ("hit@1", "hit@3", "hit@5", "hit@10", "ndcg@10", "map@100")
LLAMACPP_HINT = "tunestack llm deploy {run} --to llamacpp --quant {quant}"
DEPLOY_HINT = (
    "Deploy registers the export with Ollama and switches this API to it. The API cannot "
    "restart a llama.cpp server it does not own; for llama.cpp run "
    f"`{LLAMACPP_HINT.format(run='RUN', quant='q8_0')}`."
)
NO_CLIENT_HINT = (
    "This API has no `ollama` Python client (install tunestack[rag]); deploy from the CLI: "
    "`tunestack llm deploy RUN --to ollama|llamacpp --quant q8_0`."
)


# ---- models --------------------------------------------------------------------------------


def ollama_client_installed() -> bool:
    return importlib.util.find_spec("ollama") is not None


def serving_info(ctx: RagContext) -> ServingInfo:
    target = ctx.llm.target
    available = ollama_client_installed()
    return ServingInfo(
        llm_model=target.model,
        llm_base_url=target.base_url,
        default_embedder=ctx.settings.default_embedder,
        deploy_available=available,
        deploy_hint=DEPLOY_HINT if available else NO_CLIENT_HINT,
        ollama_host=ctx.settings.ollama_host,
        max_upload_mb=ctx.settings.max_upload_mb,
        max_file_mb=ctx.settings.max_file_mb,
    )


def _files(roots: list[Path], prefix: str) -> list[ArtifactFile]:
    return [
        ArtifactFile(name=name, size=p.stat().st_size, url=f"{prefix}/{name}")
        for name, p in artifacts.list_artifacts(roots)
    ]


def _size(path: str | None) -> int | None:
    try:
        return Path(path).stat().st_size if path else None
    except OSError:
        return None


def export_rows(record: LlmRecord) -> list[dict[str, Any]]:
    """One row per GGUF file: a run's gated exports, or a base model's own file and the
    F16 copy it is served from."""
    if record.export and record.export.files:
        return [
            {
                "name": q,
                "format": "gguf",
                "file": f.file or Path(f.path).name,
                "size": f.size,
                "parity": f.parity.top1_agreement,
                "stopped": f"{f.stop_check.stopped}/{f.stop_check.prompts}",
                "ok": f.ok,
            }
            for q, f in record.export.files.items()
        ]
    rows = []
    if record.is_base and record.model_path.endswith(".gguf"):
        rows.append(
            {"name": record.quant or "gguf", "format": "gguf", "size": _size(record.model_path)}
        )
    if record.serve_path and record.serve_path != record.model_path:
        rows.append({"name": "f16", "format": "gguf", "size": _size(record.serve_path)})
    return rows


def parity_rows(record: LlmRecord) -> list[dict[str, Any]]:
    if not record.export:
        return []
    return [
        {"name": q, **f.parity.model_dump(), "stop_rate": f.stop_check.rate, "ok": f.ok}
        for q, f in record.export.files.items()
    ]


def built_with(ctx: RagContext, warnings: list[str]) -> dict[str, list[str]]:
    """Embedder name -> collections built with it (empty, with a warning, if Chroma is down)."""
    out: dict[str, list[str]] = {}
    try:
        for b in ctx.store.builds():
            out.setdefault(b.embedder, []).append(b.name)
    except TunestackError as e:
        warnings.append(f"Collections are unknown: {e.message}")
    return out


def summary(
    ctx: RagContext, item: Listing, built: dict[str, list[str]], detail: bool = False
) -> ModelSummary:
    rec: Record | None = item.record
    if item.kind == "llm":
        deployed = item.name == ctx.llm.target.model
    else:
        deployed = item.name == ctx.settings.default_embedder
    fields: dict[str, Any] = {
        "kind": item.kind,
        "name": item.name,
        "base_model": rec.base_model if rec else None,
        "created": rec.created if rec else None,
        "source": item.status,
        "provisioned": rec is not None,
        "fingerprint": (rec.fingerprint or None) if rec else None,
        "deployed": deployed,
        "metrics": rec.metrics if rec else {},
        "parameters": rec.parameters if rec else {},
        "files": _files(
            artifacts.entry_roots(item.dir, rec),
            f"/v1/registry/models/{item.kind}/{item.name}/files",
        ),
        "exports": export_rows(rec) if isinstance(rec, LlmRecord) else [],
        "parity": parity_rows(rec) if isinstance(rec, LlmRecord) else [],
        "collections": built.get(item.name, []) if item.kind == "embedder" else [],
    }
    if detail:
        return ModelDetail(**fields, meta=dump(rec) if rec else {})
    return ModelSummary(**fields)


def listing(ctx: RagContext, kind: str, name: str) -> Listing:
    """A registry entry by name without provisioning anything."""
    for e in ctx.registry.entries(kind):  # type: ignore[arg-type]
        if e.name == name:
            return e
    raise NotFound(
        f"No {kind} named '{name}' is registered.",
        hint="Registered: " + ", ".join(ctx.registry.names(kind)),  # type: ignore[arg-type]
    )


def model_file(ctx: RagContext, kind: str, name: str, filename: str) -> Path:
    item = listing(ctx, kind, name)
    return artifacts.find_artifact(artifacts.entry_roots(item.dir, item.record), filename)


# ---- reports ---------------------------------------------------------------------------------


def report_dir(ctx: RagContext, name: str) -> Path:
    d = ctx.registry.reports / name
    if artifacts.SAFE_SEGMENT.match(name) and (d / "report.json").is_file():
        return d
    raise NotFound(f"No report named '{name}'.", hint="GET /v1/reports lists them.")


def _read_json(p: Path) -> dict[str, Any]:
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _report_fields(d: Path, body: dict[str, Any]) -> dict[str, Any]:
    top_k = body.get("top_k") if isinstance(body.get("top_k"), int) else 10
    keep = (*REPORT_METRICS, f"mrr@{top_k}", "mrr@10")
    raw = body.get("models")
    models: dict[str, Any] = raw if isinstance(raw, dict) else {}
    headline = {
        str(n): {k: float(v) for k, v in m.items() if k in keep and isinstance(v, int | float)}
        for n, m in models.items()
        if isinstance(m, dict)
    }
    red = body.get("error_reduction")
    return {
        "name": d.name,
        "kind": "rag-eval" if body.get("kind") == "rag-eval" else "embed-eval",
        "created": body.get("created"),
        "dataset": body.get("dataset"),
        "top_k": top_k,
        "models": headline,
        "error_reduction": red if isinstance(red, dict) else {},
        "files": _files([d], f"/v1/reports/{d.name}/files"),
    }


def list_reports(ctx: RagContext, limit: int) -> list[ReportSummary]:
    root = ctx.registry.reports
    dirs = (
        [d for d in root.iterdir() if (d / "report.json").is_file() and not d.name.startswith(".")]
        if root.is_dir()
        else []
    )
    dirs.sort(key=lambda d: (d / "report.json").stat().st_mtime, reverse=True)
    return [ReportSummary(**_report_fields(d, _read_json(d / "report.json"))) for d in dirs][:limit]


def report_detail(ctx: RagContext, name: str) -> ReportDetail:
    d = report_dir(ctx, name)
    body = _read_json(d / "report.json")
    md = d / "report.md"
    return ReportDetail(
        **_report_fields(d, body),
        report=body,
        markdown=md.read_text(encoding="utf-8") if md.is_file() else "",
    )


def report_file(ctx: RagContext, name: str, filename: str) -> Path:
    return artifacts.find_artifact([report_dir(ctx, name)], filename)


# ---- evaluation datasets ---------------------------------------------------------------------


def list_datasets(root: Path) -> list[DatasetInfo]:
    out = []
    if root.is_dir():
        for p in sorted([*root.rglob("*.json"), *root.rglob("*.jsonl")]):
            rel = p.relative_to(root)
            if any(part.startswith(".") for part in rel.parts) or len(rel.parts) > 3:
                continue
            stat = p.stat()
            out.append(DatasetInfo(name=rel.as_posix(), size=stat.st_size, modified=stat.st_mtime))
    return out


def resolve_dataset(ctx: RagContext, name: str, suffixes: tuple[str, ...] = (".json",)) -> Path:
    """A dataset file under TUNESTACK_HOME/datasets by its listed name, never outside it."""
    root = ctx.registry.datasets.resolve()
    parts = name.split("/")
    if all(artifacts.SAFE_SEGMENT.match(p) for p in parts) and name.endswith(suffixes):
        p = (root / name).resolve()
        if p.is_file() and p.is_relative_to(root):
            return p
    have = [d.name for d in list_datasets(root)]
    raise NotFound(
        f"No dataset named '{name}'.",
        hint=("Datasets: " + ", ".join(have[:20]) + ". " if have else "")
        + "Upload one (POST /v1/datasets) or copy a JSON file into TUNESTACK_HOME/datasets.",
    )


def upload_dataset(ctx: RagContext, filename: str, src: BinaryIO) -> DatasetUploaded:
    """Store an uploaded QA/SQuAD JSON under datasets/uploads/ once it parses; a file that
    does not is refused and not kept."""
    safe = sanitize_filename(filename or "dataset.json")
    jsonl = safe.lower().endswith(".jsonl")
    if not (jsonl or safe.lower().endswith(".json")):
        raise BadInput(
            f"'{safe}' is not a .json or .jsonl file.",
            hint="Upload EmbeddingQAFinetuneDataset JSON (queries/corpus/relevant_docs), "
            "SQuAD v1.1 JSON, or (for RAG evaluation) JSONL of {question, answer, source}.",
        )
    dest_dir = ctx.registry.datasets / "uploads"
    limit = ctx.settings.max_upload_mb * 2**20
    staged = save_upload(src, safe, dest_dir / ".incoming", limit)
    try:
        if jsonl:  # a RAG evaluation set: questions (with the files they come from)
            rag = load_dataset(staged, safe)
            n_queries = len(rag.questions)
            n_corpus = len({q.source or p for q in rag.questions for p in (q.passages or ("",))})
        else:
            ds = load_qa(staged)
            n_queries, n_corpus = len(ds.queries), len(ds.corpus)
    except TunestackError as e:
        staged.unlink(missing_ok=True)
        raise BadInput(e.message.replace(str(staged), safe), hint=e.hint) from None
    final = dest_dir / safe
    os.replace(staged, final)
    return DatasetUploaded(
        name=f"uploads/{safe}",
        size=final.stat().st_size,
        modified=time.time(),
        queries=n_queries,
        corpus=n_corpus,
    )
