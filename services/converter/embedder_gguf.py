"""A sentence-transformers embedder as GGUF, for the tools that look for embedding models
there (Ollama, llama.cpp), with a parity gate: `tunestack embed export NAME --gguf` and
`tunestack embed deploy NAME --to ollama|llamacpp`.

Users report Ollama's embeddings disagreeing with sentence-transformers'. The usual
causes are the pooling (mean vs CLS) the GGUF carries, a missing normalization, and
truncation (sentence-transformers cuts at its max_seq_length, a server at its context).
So the export converts with llama.cpp's own converter from the same pinned toolchain as
the LLM export, then embeds PARITY_TEXTS with llama.cpp (llama-cpp-python, the file's own
pooling, context = the model's window) and with sentence-transformers, each text first cut
to the window by the model's tokenizer so both see the same words, and requires cosine
>= 0.99 on every text. A file that fails is kept for inspection, marked not ok, and
refused by deploy. Deploying sets the server's context to the window (Ollama's num_ctx,
llama.cpp's n_ctx) and checks the served vectors against sentence-transformers' again,
through the client ingest will use, before registering the model as an embedder.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from services.common.embedders.probe_texts import parity_texts
from services.common.embedders.remote import (
    RemoteEmbedder,
    register_remote,
    remote_fingerprint,
)
from services.common.errors import BadInput, Conflict
from services.common.hashing import file_sha256
from services.common.records import (
    Deployment,
    EmbedderExport,
    EmbedderRecord,
    EmbedParity,
    FileRef,
    RemoteEndpoint,
)
from services.common.registry import Entry, Registry
from services.converter.convert import run_converter
from services.converter.deploy import _ollama_client, ollama_errors, push_blob
from services.converter.settings import ConvertSettings
from services.converter.toolchain import scripts_dir

Say = Callable[[str], None]
THRESHOLD = 0.99
OUTTYPES = ("f32", "f16")


def _st_model(entry: Entry[EmbedderRecord]) -> Any:
    from sentence_transformers import SentenceTransformer  # optional extra (embed)

    return SentenceTransformer(str(entry.model_path), device="cpu")


def _window(st: Any) -> int:
    return int(min(st.max_seq_length or 512, 512))


def cut_to_window(st: Any, texts: list[str], window: int) -> list[str]:
    """Each text cut, at a token boundary of the original characters, to what fits the
    window with [CLS]/[SEP] (and a few tokens to spare, should llama.cpp's tokenizer split
    one word more finely)."""
    keep = window - 8
    out = []
    for t in texts:
        enc = st.tokenizer(t, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        out.append(t if len(offsets) <= keep else t[: offsets[keep - 1][1]])
    return out


def gguf_vectors(gguf: Path, texts: list[str], window: int) -> np.ndarray:
    from llama_cpp import Llama  # optional extra (llm)

    llm = Llama(
        model_path=str(gguf),
        embedding=True,
        n_ctx=window,
        n_batch=window,
        n_ubatch=window,
        verbose=False,
    )
    try:
        return np.asarray([llm.embed(t, normalize=True) for t in texts], dtype=np.float32)
    finally:
        llm.close()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.asarray((a * b).sum(axis=1))


def parity(st: Any, gguf: Path, texts: list[str]) -> EmbedParity:
    window = _window(st)
    cut = cut_to_window(st, texts, window)
    want = st.encode(cut, normalize_embeddings=True, convert_to_numpy=True)
    cos = cosines(want, gguf_vectors(gguf, cut, window))
    low = float(cos.min())
    return EmbedParity(
        min_cosine=round(low, 6),
        median_cosine=round(float(statistics.median(cos.tolist())), 6),
        texts=len(texts),
        window=window,
        threshold=THRESHOLD,
        ok=low >= THRESHOLD,
    )


def export_embedder(
    s: ConvertSettings,
    registry: Registry,
    name: str,
    *,
    outtype: str = "f16",
    texts: list[str] | None = None,
    say: Say = lambda m: None,
) -> Entry[EmbedderRecord]:
    entry: Entry[EmbedderRecord] = registry.embedder(name)
    if entry.record.provider != "sentence-transformers":
        raise BadInput(
            f"'{name}' ({entry.record.provider}) is not a sentence-transformers model: there "
            "are no weights here to convert.",
            hint="Export the bundled all-minilm-l6-v2 or an embedder tuned from it.",
        )
    if outtype not in OUTTYPES:
        raise BadInput(f"--outtype must be one of {', '.join(OUTTYPES)}.")
    out = entry.dir / "gguf" / f"{name}-{outtype}.gguf"
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    say(f"Converting {name} with llama.cpp's convert_hf_to_gguf.py ({outtype})...")
    run_converter(
        scripts_dir(s),
        [str(entry.model_path), "--outfile", str(partial), "--outtype", outtype],
        writes=out.parent,
    )
    partial.replace(out)
    say("Parity gate: llama.cpp vs sentence-transformers on 200 texts...")
    gate = parity(_st_model(entry), out, texts or parity_texts())
    export = EmbedderExport(
        file=FileRef(
            path=str(out), file=out.name, size=out.stat().st_size, sha256=file_sha256(out)
        ),
        outtype=outtype,
        parity=gate,
        ok=gate.ok,
    )

    def put(rec: EmbedderRecord) -> EmbedderRecord:
        rec.gguf = export
        return rec

    return registry.update("embedder", name, put)


class EmbedTarget(Protocol):
    """A server that `embed deploy --to NAME` installs a GGUF embedder on: Ollama here,
    the local stack's llama.cpp embedding server in platform_cli (which this layer cannot
    import). `provider` is how the registered embedder then reaches it."""

    name: str
    provider: str  # "ollama" | "openai-compatible"

    def install(self, gguf: Path, sha256: str, model: str, window: int, say: Say) -> str:
        """Serve `gguf` as `model`; return the base URL the embedder is registered with."""
        ...


class OllamaEmbedTarget:
    """Ollama at `host`: upload the file, create the model with num_ctx = the window
    (Ollama then cuts long texts as sentence-transformers does)."""

    name = "ollama"
    provider = "ollama"

    def __init__(self, host: str) -> None:
        self.host = host

    def install(self, gguf: Path, sha256: str, model: str, window: int, say: Say) -> str:
        client = _ollama_client(self.host)
        with ollama_errors(self.host):
            digest = push_blob(client, gguf, sha256, say)
            say(f"Creating Ollama embedding model '{model}' (num_ctx {window})...")
            client.create(
                model=model, files={gguf.name: digest}, parameters={"num_ctx": window}, stream=False
            )
        return self.host


def deploy_embedder(
    registry: Registry,
    name: str,
    target: EmbedTarget,
    *,
    model: str | None = None,
    register_as: str | None = None,
    say: Say = lambda m: None,
) -> Entry[EmbedderRecord]:
    """Serve the exported GGUF on `target`, check the served vectors (through the same
    client ingest will use) against sentence-transformers', and register the served model
    as an embedder (REGISTER_AS, default NAME-TARGET)."""
    entry: Entry[EmbedderRecord] = registry.embedder(name)
    export = entry.record.gguf
    if export is None:
        raise Conflict(
            f"'{name}' has no GGUF export.", hint=f"Run: tunestack embed export {name} --gguf"
        )
    if not export.ok:
        raise Conflict(
            f"'{name}''s GGUF failed its parity gate: {'; '.join(export.parity.problems())}.",
            hint="It is not deployed: a server would return other vectors than the ones the "
            "collections hold. Re-export from a sentence-transformers folder with its "
            "1_Pooling config.",
        )
    gguf = Path(export.file.path)
    if not gguf.is_file() or file_sha256(gguf) != export.file.sha256:
        raise Conflict(
            f"{gguf.name} changed or is missing since it was exported.",
            hint=f"Run: tunestack embed export {name} --gguf",
        )
    model = model or name
    window = export.parity.window
    base_url = target.install(gguf, export.file.sha256, model, window, say)
    endpoint = RemoteEndpoint(base_url=base_url, model=model)
    served = RemoteEmbedder(
        model, remote_fingerprint(target.provider, endpoint), target.provider, endpoint, attempts=3
    )
    st = _st_model(entry)
    cut = cut_to_window(st, parity_texts(20), window)
    want = st.encode(cut, normalize_embeddings=True, convert_to_numpy=True)
    low = float(cosines(want, served.encode(cut)).min())
    if low < THRESHOLD:
        raise Conflict(
            f"{target.name}'s vectors for '{model}' differ from sentence-transformers' (cosine "
            f"{low:.4f} < {THRESHOLD}); not registered.",
            hint=f"Check the server's BERT support; the collections keep using '{name}'.",
        )
    reg_name = register_as or f"{name}-{target.name}"
    remote = register_remote(registry, reg_name, target.provider, endpoint, replace=True)
    dep = Deployment(to=target.name, name=model, base_url=base_url, by="tunestack embed deploy")

    def add(rec: EmbedderRecord) -> EmbedderRecord:
        assert rec.gguf is not None
        rec.gguf.deployments.append(dep)
        return rec

    registry.update("embedder", name, add)
    say(f"{target.name}'s vectors agree (min cosine {low:.4f}); registered embedder '{reg_name}'.")
    return remote


__all__ = [
    "EmbedTarget",
    "OllamaEmbedTarget",
    "deploy_embedder",
    "export_embedder",
    "parity",
    "parity_texts",
]
