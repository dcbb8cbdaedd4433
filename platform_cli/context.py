"""What every command needs: the stack settings, the API client, one way to fail."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

from platform_cli.output import fail
from platform_cli.settings import StackSettings
from services.common.api_client import RagClient
from services.common.errors import TunestackError, disk_full_of
from services.common.logs import quiet_libraries
from services.common.records import Kind
from services.common.registry import BASE_MODELS, Registry
from services.rag_api.context import RagContext
from services.rag_api.settings import RagSettings

T = TypeVar("T")


def settings() -> StackSettings:
    quiet_libraries()
    return StackSettings()


def run(fn: Callable[[], T]) -> T:
    """Call `fn`; an anticipated failure prints its message and hint and exits 1.

    A full disk is anticipated wherever it happens: ENOSPC/EDQUOT (or a library's words
    for it) becomes DiskFull naming the folder, relative to TUNESTACK_HOME, instead of a
    traceback. Services name the folder they were writing (errors.disk_full_names); an
    OSError raised elsewhere names its file's folder.
    """
    try:
        return fn()
    except TunestackError as e:
        fail(e)
    except Exception as e:
        full = disk_full_of(e, _home())
        if full is None:
            raise
        fail(full)


def _home() -> Path | None:
    """TUNESTACK_HOME, to show paths relative to it (None if the settings do not load)."""
    try:
        return StackSettings().home_dir
    except Exception:  # a failure path must not fail on settings
        return None


def provision_bases(registry: Registry, kind: Kind, names: list[str]) -> None:
    """Register the bundled base models among `names` (an explicit, download-free step
    of the commands that name models); other names are looked up by the service, which
    reports an unknown one after checking the rest of the input."""
    for name in names:
        base = BASE_MODELS.get(name)
        if base is not None and base.kind == kind:
            run(partial(registry.ensure, kind, name))


def rag_client(s: StackSettings, timeout: float = 300) -> RagClient:
    return RagClient(s.api_url, s.api_key_value, timeout=timeout)


def rag_context(s: StackSettings) -> RagContext:
    """The RAG service layer's context for a command, on the stack's Chroma, registry and
    LLM server (TUNESTACK_RAG_LLM_BASE_URL when set, as in a docker job container; else the
    local stack's llama.cpp port)."""
    rag = RagSettings(home=s.home, chroma_url=s.chroma_url, default_embedder=s.default_embedder)
    if "llm_base_url" not in rag.model_fields_set:
        rag = RagSettings(
            home=s.home,
            chroma_url=s.chroma_url,
            default_embedder=s.default_embedder,
            llm_base_url=s.llm_url,
        )
    return RagContext.from_settings(rag, pool_capacity=1)
