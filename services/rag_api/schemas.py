"""Request bodies. OpenAI-shaped ones allow extra fields, as OpenAI clients send many."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class RetrieveRequest(BaseModel):
    collection: str
    query: str
    top_k: int = Field(default=4, ge=1, le=100)
    mode: Literal["dense", "bm25", "hybrid"] = "dense"
    embedder: str | None = None


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
    retrieval_mode: Literal["dense", "bm25", "hybrid"] = "dense"
    embedder: str | None = None
    llm: str | None = Field(
        default=None,
        description="rag/* only: a model the LLM server serves, to answer with instead of "
        "the deployed one (GET /v1/models lists them).",
    )


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"


class ReindexRequest(BaseModel):
    embedder: str
