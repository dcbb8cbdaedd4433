"""What the OpenAI-compatible /v1/models and /v1/embeddings serve: RAG collections as
models `rag/<name>`, the LLM server's own models, and the registered embedders."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

from services.common.embedders import Embedder
from services.common.errors import BadInput, TunestackError
from services.rag_api import llm as llm_mod
from services.rag_api.context import RagContext

RAG_PREFIX = "rag/"
MAX_INPUTS = 2048


def _model(id_: Any, owner: str, created: int) -> dict[str, Any]:
    return {"id": id_, "object": "model", "created": created, "owned_by": owner}


async def model_catalog(ctx: RagContext) -> list[dict[str, Any]]:
    """Every model a client may name; a peer that is down only drops its own entries."""
    now = int(time.time())
    data: list[dict[str, Any]] = []
    try:
        builds = await asyncio.to_thread(ctx.store.builds)
        data += [
            _model(f"{RAG_PREFIX}{n}", "tunestack-rag", now)
            for n in sorted({b.name for b in builds})
        ]
    except TunestackError:
        pass  # Chroma down: the LLM's models are still worth listing
    try:
        for m in await llm_mod.list_models(ctx.llm.target):
            data.append(_model(m.get("id"), m.get("owned_by", "llm-server"), m.get("created", now)))
    except Exception:
        pass  # LLM server down: collections and embedders are still worth listing
    data += [
        _model(e.name, "tunestack-embedder", now)
        for e in ctx.registry.entries("embedder")
        if e.provisioned
    ]
    return data


async def embeddings(
    ctx: RagContext, model: str, inputs: str | list[str], encoding_format: str
) -> dict[str, Any]:
    """OpenAI's embeddings response from a registered embedder (float or base64 float32)."""
    texts = [inputs] if isinstance(inputs, str) else list(inputs)
    if not texts or len(texts) > MAX_INPUTS:
        raise BadInput(f"input must hold 1 to {MAX_INPUTS} strings.")
    emb = await asyncio.to_thread(ctx.pool.get, model)
    # encoding, counting tokens and shaping 2,048 vectors are CPU work: off the event loop
    return await asyncio.to_thread(_embeddings, emb, texts, encoding_format)


def _embeddings(emb: Embedder, texts: list[str], encoding_format: str) -> dict[str, Any]:
    vecs = emb.encode(texts)
    n_tokens = sum(len(emb.tokens(t)) for t in texts)
    data = []
    for i, v in enumerate(vecs):
        value: Any = (
            base64.b64encode(v.astype("<f4").tobytes()).decode()
            if encoding_format == "base64"
            else v.tolist()
        )
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {
        "object": "list",
        "data": data,
        "model": emb.name,
        "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
    }
