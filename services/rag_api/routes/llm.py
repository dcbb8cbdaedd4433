"""The LLM the RAG chain uses: read it, or switch it atomically (verified first; see
services.rag_api.llm_switch). `tunestack llm deploy` calls the switch after the new model
answers on its server."""

from __future__ import annotations

from fastapi import APIRouter, Request

from services.common.api_schemas import LlmSwitch, LlmTargetInfo, SwitchResponse, error_responses
from services.rag_api.llm_switch import public, switch_llm

router = APIRouter(
    prefix="/v1/admin", tags=["admin"], responses=error_responses(404, 409, 502, 503, 504)
)


@router.get("/llm", summary="The LLM the RAG chain uses now", response_model=LlmTargetInfo)
async def current_llm(request: Request) -> LlmTargetInfo:
    return public(request.app.state.tunestack.llm.target)


@router.post(
    "/llm",
    summary="Switch the RAG chain's LLM atomically (verified first)",
    response_model=SwitchResponse,
)
async def switch(request: Request, body: LlmSwitch) -> SwitchResponse:
    return await switch_llm(request.app.state.tunestack, body)
