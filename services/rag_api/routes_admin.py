"""Admin endpoints the UI needs: the model registry, evaluation reports, eval datasets,
and deploying an exported LLM to Ollama (a background job, see job_tasks.run_deploy).

Everything is read from TUNESTACK_HOME through the same Registry the CLI uses, so the UI
shows what exists and nothing else: a field a model's meta.json lacks (exports, parity)
is simply absent from the answer. Files are served only through services.rag_api
.artifacts, which refuses any name that is not a known artifact in the entry's folder.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, File, Query, Request, UploadFile
from fastapi.responses import FileResponse

from services.common.errors import BadInput, Conflict, NotFound, TunestackError
from services.common.registry import Entry, validate_name
from services.rag_api import artifacts
from services.rag_api.admin_schemas import (
    ERRORS,
    ArtifactFile,
    DatasetInfo,
    DatasetsResponse,
    DatasetUploaded,
    DeployRequest,
    ErrorBody,
    JobInfo,
    ModelDetail,
    ModelsResponse,
    ModelSummary,
    ReportDetail,
    ReportsResponse,
    ReportSummary,
    ServingInfo,
)
from services.rag_api.jobs import Progress, app_manager
from services.rag_api.state import AppState
from services.rag_api.uploads import sanitize_filename, save_upload

router = APIRouter(prefix="/v1", tags=["admin"], responses=ERRORS)
KindParam = Literal["llm", "embedder"]
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


def state(request: Request) -> AppState:
    return request.app.state.tunestack


# ---- registry ------------------------------------------------------------------------


def _ollama_client_installed() -> bool:
    return importlib.util.find_spec("ollama") is not None


def serving_info(st: AppState) -> ServingInfo:
    target = st.llm.target
    available = _ollama_client_installed()
    return ServingInfo(
        llm_model=target.model,
        llm_base_url=target.base_url,
        default_embedder=st.settings.default_embedder,
        deploy_available=available,
        deploy_hint=DEPLOY_HINT if available else NO_CLIENT_HINT,
        ollama_host=st.settings.ollama_host,
        max_upload_mb=st.settings.max_upload_mb,
        max_file_mb=st.settings.max_file_mb,
    )


def _files(roots: list[Path], prefix: str) -> list[ArtifactFile]:
    return [
        ArtifactFile(name=name, size=p.stat().st_size, url=f"{prefix}/{name}")
        for name, p in artifacts.list_artifacts(roots)
    ]


def _summary(
    entry: Entry, st: AppState, built: dict[str, list[str]], detail: bool = False
) -> ModelSummary:
    meta = entry.meta
    provisioned = "model_path" in meta
    if entry.kind == "llm":
        deployed = entry.name == st.llm.target.model
    else:
        deployed = entry.name == st.settings.default_embedder
    fields: dict[str, Any] = {
        "kind": entry.kind,
        "name": entry.name,
        "base_model": meta.get("base_model"),
        "created": meta.get("created"),
        "source": meta.get("source") or meta.get("status"),
        "provisioned": provisioned,
        "fingerprint": meta.get("fingerprint") or None,
        "deployed": deployed,
        "metrics": meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {},
        "parameters": meta.get("parameters") if isinstance(meta.get("parameters"), dict) else {},
        "files": _files(
            artifacts.entry_roots(entry),
            f"/v1/registry/models/{entry.kind}/{entry.name}/files",
        ),
        "exports": artifacts.export_rows(meta) if entry.kind == "llm" else [],
        "parity": artifacts.parity_rows(meta) if entry.kind == "llm" else [],
        "collections": built.get(entry.name, []) if entry.kind == "embedder" else [],
    }
    if detail:
        return ModelDetail(**fields, meta=meta)
    return ModelSummary(**fields)


def _built_with(st: AppState, warnings: list[str]) -> dict[str, list[str]]:
    """Embedder name -> collections built with it (empty, with a warning, if Chroma is down)."""
    out: dict[str, list[str]] = {}
    try:
        for b in st.store.builds():
            out.setdefault(b.embedder, []).append(b.name)
    except TunestackError as e:
        warnings.append(f"Collections are unknown: {e.message}")
    return out


def _entry(st: AppState, kind: KindParam, name: str) -> Entry:
    """A registered entry without provisioning anything (Registry.get would)."""
    for e in st.registry.entries(kind):
        if e.name == name:
            return e
    raise NotFound(
        f"No {kind} named '{name}' is registered.",
        hint="Registered: " + ", ".join(st.registry.names(kind)),
    )


@router.get(
    "/registry/models",
    summary="Registered LLM runs and embedders with metrics, artifacts and exports",
    response_model=ModelsResponse,
)
def list_models(
    request: Request, kind: Annotated[KindParam | None, Query()] = None
) -> ModelsResponse:
    st = state(request)
    warnings: list[str] = []
    built = _built_with(st, warnings) if kind in (None, "embedder") else {}
    models = [_summary(e, st, built) for e in st.registry.entries(kind)]
    return ModelsResponse(serving=serving_info(st), models=models, warnings=warnings)


@router.get(
    "/registry/models/{kind}/{name}",
    summary="One registry entry with its whole meta.json",
    response_model=ModelDetail,
)
def get_model(request: Request, kind: KindParam, name: str) -> ModelSummary:
    st = state(request)
    entry = _entry(st, kind, name)
    built = _built_with(st, []) if kind == "embedder" else {}
    return _summary(entry, st, built, detail=True)


@router.get(
    "/registry/models/{kind}/{name}/files/{filename}",
    summary="An artifact of a registry entry (loss curve PNG, trainer log, results JSON)",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}, "application/json": {}}}},
)
def model_file(request: Request, kind: KindParam, name: str, filename: str) -> FileResponse:
    entry = _entry(state(request), kind, name)
    path = artifacts.find_artifact(artifacts.entry_roots(entry), filename)
    return FileResponse(path, media_type=artifacts.media_type(path))


@router.post(
    "/registry/models/llm/{name}/deploy",
    summary="Deploy an exported LLM to Ollama and switch this API to it (a background job)",
    response_model=JobInfo,
    status_code=202,
    responses={
        409: {
            "model": ErrorBody,
            "description": "--to llamacpp (the hint is the CLI command), or no Ollama client.",
        },
    },
)
def deploy_llm(
    request: Request, name: str, body: Annotated[DeployRequest | None, Body()] = None
) -> JobInfo:
    """What `tunestack llm deploy NAME --to ollama` does, as a job the UI polls: check the
    GGUF against meta.json, register it with Ollama at OLLAMA_HOST, one generate, then the
    verified atomic switch of /v1/admin/llm, then meta.json's `deployments`. The export,
    its gate and its Modelfile are checked before the job is queued; any failure in the
    job leaves the previous LLM serving.
    """
    from services.converter import deploy as dep
    from services.rag_api import job_tasks

    st = state(request)
    req = body or DeployRequest()
    entry = _entry(st, "llm", name)
    quant = req.quant.lower()
    model = req.name or name
    try:
        validate_name(model.replace(":", "-").replace("/", "-"))
    except TunestackError as e:
        raise BadInput(e.message, hint=e.hint) from e
    if req.to == "llamacpp":
        cmd = LLAMACPP_HINT.format(run=name, quant=quant)
        raise Conflict(
            "The RAG API cannot restart a llama.cpp server it does not own; deploy to "
            "llama.cpp from the CLI on the machine that runs it (it switches this API too).",
            hint=cmd if req.name is None else f"{cmd} --name {model}",
        )
    if not _ollama_client_installed():
        raise Conflict("This API cannot reach Ollama: no `ollama` client.", hint=NO_CLIENT_HINT)
    rec = dep.export_record(entry, quant)
    dep.modelfile_for(
        entry, dep.DeployFile(quant, Path(rec["path"]), rec["sha256"], int(rec["size"]), rec)
    )

    def run(progress: Progress) -> dict[str, Any]:
        return job_tasks.run_deploy(st, name, quant, model, progress)

    params = {"run": name, "to": "ollama", "quant": quant, "name": model}
    job = app_manager(request.app.state).submit("deploy", params, run, key=f"deploy:{name}")
    return JobInfo(**job.info())


# ---- reports -------------------------------------------------------------------------


def _report_dir(st: AppState, name: str) -> Path:
    d = st.registry.reports / name
    if artifacts.SAFE_SEGMENT.match(name) and (d / "report.json").is_file():
        return d
    raise NotFound(f"No report named '{name}'.", hint="GET /v1/reports lists them.")


def _read_json(p: Path) -> dict[str, Any]:
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _report_summary(d: Path, body: dict[str, Any]) -> dict[str, Any]:
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
        "created": body.get("created"),
        "dataset": body.get("dataset"),
        "top_k": top_k,
        "models": headline,
        "error_reduction": red if isinstance(red, dict) else {},
        "files": _files([d], f"/v1/reports/{d.name}/files"),
    }


@router.get(
    "/reports",
    summary="Past evaluation reports, newest first, with headline metrics",
    response_model=ReportsResponse,
)
def list_reports(
    request: Request, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> ReportsResponse:
    root = state(request).registry.reports
    dirs = (
        [d for d in root.iterdir() if (d / "report.json").is_file() and not d.name.startswith(".")]
        if root.is_dir()
        else []
    )
    dirs.sort(key=lambda d: (d / "report.json").stat().st_mtime, reverse=True)
    reports = [ReportSummary(**_report_summary(d, _read_json(d / "report.json"))) for d in dirs]
    return ReportsResponse(reports=reports[:limit])


@router.get(
    "/reports/{name}",
    summary="One evaluation report: report.json, report.md and its files",
    response_model=ReportDetail,
)
def get_report(request: Request, name: str) -> ReportDetail:
    d = _report_dir(state(request), name)
    body = _read_json(d / "report.json")
    md = d / "report.md"
    return ReportDetail(
        **_report_summary(d, body),
        report=body,
        markdown=md.read_text(encoding="utf-8") if md.is_file() else "",
    )


@router.get(
    "/reports/{name}/files/{filename}",
    summary="A report's file (metrics.png, report.md, report.json)",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}, "application/json": {}}}},
)
def report_file(request: Request, name: str, filename: str) -> FileResponse:
    d = _report_dir(state(request), name)
    path = artifacts.find_artifact([d], filename)
    return FileResponse(path, media_type=artifacts.media_type(path))


# ---- evaluation datasets -------------------------------------------------------------


def datasets_root(st: AppState) -> Path:
    return st.settings.home_dir / "datasets"


def list_dataset_files(root: Path) -> list[DatasetInfo]:
    out = []
    if root.is_dir():
        for p in sorted(root.rglob("*.json")):
            rel = p.relative_to(root)
            if any(part.startswith(".") for part in rel.parts) or len(rel.parts) > 3:
                continue
            stat = p.stat()
            out.append(DatasetInfo(name=rel.as_posix(), size=stat.st_size, modified=stat.st_mtime))
    return out


def resolve_dataset(st: AppState, name: str) -> Path:
    """A dataset file under TUNESTACK_HOME/datasets by its listed name, never outside it."""
    root = datasets_root(st).resolve()
    parts = name.split("/")
    if all(artifacts.SAFE_SEGMENT.match(p) for p in parts) and name.endswith(".json"):
        p = (root / name).resolve()
        if p.is_file() and p.is_relative_to(root):
            return p
    have = [d.name for d in list_dataset_files(root)]
    raise NotFound(
        f"No dataset named '{name}'.",
        hint=("Datasets: " + ", ".join(have[:20]) + ". " if have else "")
        + f"Upload one (POST /v1/datasets) or copy a JSON file into {root}.",
    )


@router.get(
    "/datasets",
    summary="Evaluation datasets under TUNESTACK_HOME/datasets (QA or SQuAD JSON)",
    response_model=DatasetsResponse,
)
def list_datasets(request: Request) -> DatasetsResponse:
    return DatasetsResponse(datasets=list_dataset_files(datasets_root(state(request))))


@router.post(
    "/datasets",
    summary="Upload an evaluation dataset (EmbeddingQAFinetuneDataset or SQuAD JSON)",
    response_model=DatasetUploaded,
    status_code=201,
)
def upload_dataset(
    request: Request,
    file: Annotated[UploadFile, File(description="EmbeddingQAFinetuneDataset or SQuAD JSON")],
) -> DatasetUploaded:
    from services.embed_tuner.datasets import load_qa

    st = state(request)
    safe = sanitize_filename(file.filename or "dataset.json")
    if not safe.lower().endswith(".json"):
        raise BadInput(
            f"'{safe}' is not a .json file.",
            hint="Upload EmbeddingQAFinetuneDataset JSON (queries/corpus/relevant_docs) "
            "or SQuAD v1.1 JSON.",
        )
    dest_dir = datasets_root(st) / "uploads"
    staged = save_upload(file.file, safe, dest_dir / ".incoming", st.settings.max_upload_mb * 2**20)
    try:
        ds = load_qa(staged)
    except TunestackError as e:
        staged.unlink(missing_ok=True)
        raise BadInput(e.message.replace(str(staged), safe), hint=e.hint) from None
    final = dest_dir / safe
    os.replace(staged, final)
    return DatasetUploaded(
        name=f"uploads/{safe}",
        size=final.stat().st_size,
        modified=time.time(),
        queries=len(ds.queries),
        corpus=len(ds.corpus),
    )
