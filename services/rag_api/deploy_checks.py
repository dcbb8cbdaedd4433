"""What the API refuses before it queues a deploy: an unknown run, a bad model name, a
llama.cpp target (the API does not own that server), no Ollama client, no export of the
asked type, a failed gate, no usable Modelfile. Refusing here means a typo is a 4xx at
once instead of a job that fails later."""

from __future__ import annotations

from services.common.api_schemas import DeployRequest
from services.common.errors import Conflict
from services.converter.deploy import check_deployable, validate_model_name
from services.rag_api.context import RagContext
from services.rag_api.registry_views import (
    LLAMACPP_HINT,
    NO_CLIENT_HINT,
    listing,
    ollama_client_installed,
)


def checked_deploy(ctx: RagContext, run: str, req: DeployRequest) -> tuple[str, str]:
    """(quant, model name on Ollama) of a deploy that may be queued; raises otherwise."""
    listing(ctx, "llm", run)  # 404 listing what exists
    quant = req.quant.lower()
    model = req.name or run
    validate_model_name(model)
    if req.to == "llamacpp":
        cmd = LLAMACPP_HINT.format(run=run, quant=quant)
        raise Conflict(
            "The RAG API cannot restart a llama.cpp server it does not own; deploy to "
            "llama.cpp from the CLI on the machine that runs it (it switches this API too).",
            hint=cmd if req.name is None else f"{cmd} --name {model}",
        )
    if not ollama_client_installed():
        raise Conflict("This API cannot reach Ollama: no `ollama` client.", hint=NO_CLIENT_HINT)
    check_deployable(ctx.registry.llm(run), quant)
    return quant, model
