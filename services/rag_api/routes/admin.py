"""Admin endpoints the UI needs: the model registry, evaluation reports, eval datasets,
and deploying an exported LLM to Ollama (a background job, see job_bodies.run_deploy).
What each shows is decided in services.rag_api.registry_views; this module is HTTP only."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, File, Query, Request, UploadFile
from fastapi.responses import FileResponse

from services.common.api_schemas import (
    ERRORS,
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
    error_responses,
)
from services.common.errors import disk_full_names
from services.rag_api import artifacts
from services.rag_api import registry_views as views
from services.rag_api.context import RagContext
from services.rag_api.deploy_checks import checked_deploy
from services.rag_api.jobs import JobSpec, app_jobs

router = APIRouter(prefix="/v1", tags=["admin"], responses=ERRORS)
KindParam = Literal["llm", "embedder"]
IMAGE_OR_JSON: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}, "application/json": {}}}
}


def context(request: Request) -> RagContext:
    return request.app.state.tunestack


@router.get(
    "/registry/models",
    summary="Registered LLM runs and embedders with metrics, artifacts and exports",
    response_model=ModelsResponse,
)
def list_models(
    request: Request, kind: Annotated[KindParam | None, Query()] = None
) -> ModelsResponse:
    ctx = context(request)
    warnings: list[str] = []
    built = views.built_with(ctx, warnings) if kind in (None, "embedder") else {}
    models = [views.summary(ctx, e, built) for e in ctx.registry.entries(kind)]
    return ModelsResponse(serving=views.serving_info(ctx), models=models, warnings=warnings)


@router.get(
    "/registry/models/{kind}/{name}",
    summary="One registry entry with its whole meta.json",
    response_model=ModelDetail,
)
def get_model(request: Request, kind: KindParam, name: str) -> ModelSummary:
    ctx = context(request)
    built = views.built_with(ctx, []) if kind == "embedder" else {}
    return views.summary(ctx, views.listing(ctx, kind, name), built, detail=True)


@router.get(
    "/registry/models/{kind}/{name}/files/{filename}",
    summary="An artifact of a registry entry (loss curve PNG, trainer log, results JSON)",
    response_class=FileResponse,
    responses=IMAGE_OR_JSON,
)
def model_file(request: Request, kind: KindParam, name: str, filename: str) -> FileResponse:
    path = views.model_file(context(request), kind, name, filename)
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
    """What `tunestack llm deploy NAME --to ollama` does, as a job the UI polls. The
    export, its gate and its Modelfile are checked before the job is queued; any failure
    in the job leaves the previous LLM serving."""
    ctx = context(request)
    quant, model = checked_deploy(ctx, name, body or DeployRequest())

    params = {"run": name, "to": "ollama", "quant": quant, "name": model}
    args = {"run": name, "quant": quant, "model": model}
    again = f"tunestack llm deploy {name} --to ollama --quant {quant} --name {model}"
    spec = JobSpec("deploy", params, args, key=f"deploy:{name}", resume=again)
    return JobInfo(**app_jobs(request.app.state).enqueue(spec))


@router.get(
    "/reports",
    summary="Past evaluation reports, newest first, with headline metrics",
    response_model=ReportsResponse,
)
def list_reports(
    request: Request, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> ReportsResponse:
    return ReportsResponse(reports=views.list_reports(context(request), limit))


@router.get(
    "/reports/{name}",
    summary="One evaluation report: report.json, report.md and its files",
    response_model=ReportDetail,
)
def get_report(request: Request, name: str) -> ReportDetail:
    return views.report_detail(context(request), name)


@router.get(
    "/reports/{name}/files/{filename}",
    summary="A report's file (metrics.png, report.md, report.json)",
    response_class=FileResponse,
    responses=IMAGE_OR_JSON,
)
def report_file(request: Request, name: str, filename: str) -> FileResponse:
    path = views.report_file(context(request), name, filename)
    return FileResponse(path, media_type=artifacts.media_type(path))


@router.get(
    "/datasets",
    summary="Evaluation datasets under TUNESTACK_HOME/datasets (QA or SQuAD JSON)",
    response_model=DatasetsResponse,
)
def list_datasets(request: Request) -> DatasetsResponse:
    return DatasetsResponse(datasets=views.list_datasets(context(request).registry.datasets))


@router.post(
    "/datasets",
    summary="Upload an evaluation dataset (EmbeddingQAFinetuneDataset or SQuAD JSON)",
    response_model=DatasetUploaded,
    status_code=201,
    responses=error_responses(409, 507),
)
def upload_dataset(
    request: Request,
    file: Annotated[UploadFile, File(description="EmbeddingQAFinetuneDataset or SQuAD JSON")],
) -> DatasetUploaded:
    ctx = context(request)
    with disk_full_names(ctx.registry.datasets / "uploads", ctx.settings.home_dir):
        return views.upload_dataset(ctx, file.filename or "dataset.json", file.file)
