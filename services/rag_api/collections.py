"""Collections as a service: ingest (paths or uploads), reindex, list, delete.

Every writer of a collection takes its cross-process lock (services.common.locks), so
`tunestack ingest` in a terminal and an upload through the API never write one
collection at the same time, and a reindex waits for both.

A collection built for several embedders stays one set of documents: an ingest with an
embedder the collection has no build for yet first copies the existing chunks into a
new build for it (a reindex), and an ingest that changes one build marks the others
stale (`collections list` shows it) until they are reindexed from it. Uploads live under
TUNESTACK_HOME/uploads/<collection>/ and are deleted with the collection.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from services.common import atomic
from services.common.api_schemas import BuildInfo, CollectionInfo
from services.common.errors import BadInput, ServiceUnavailable, TunestackError
from services.rag_api.context import RagContext
from services.rag_api.ingest import Ingestor, IngestReport, Progress, load_limits
from services.rag_api.reindex import reindex
from services.rag_api.store import Build, validate_collection_name
from services.rag_api.uploads import save_upload, unique_names

Waiting = Callable[[], None]


@dataclass
class IngestRequest:
    paths: list[Path]
    collection: str
    embedder: str | None = None
    chunk_size: int | None = None
    chunk_overlap: int | None = None
    prune: bool = False


def check_chunking(ctx: RagContext, req: IngestRequest) -> tuple[int, int]:
    """(chunk size, overlap) of the request, or the refusal of an overlap past the size."""
    s = ctx.settings
    size = req.chunk_size or s.chunk_size
    overlap = s.chunk_overlap if req.chunk_overlap is None else req.chunk_overlap
    if not 0 <= overlap < size:
        raise BadInput(
            f"chunk_overlap ({overlap}) must be smaller than chunk_size ({size}).",
            hint="Lower the overlap or raise the chunk size.",
        )
    return size, overlap


def _ingestor(ctx: RagContext, req: IngestRequest) -> Ingestor:
    s = ctx.settings
    size, overlap = check_chunking(ctx, req)
    emb = ctx.pool.get(req.embedder or s.default_embedder)
    return Ingestor(
        ctx.store,
        emb,
        chunk_size=size,
        chunk_overlap=overlap,
        max_file_bytes=s.max_file_mb * 2**20,
        limits=load_limits(s),
    )


def ingest(
    ctx: RagContext,
    req: IngestRequest,
    *,
    progress: Progress | None = None,
    waiting: Waiting | None = None,
) -> IngestReport:
    """Ingest files and folders into a collection (idempotent, crash-safe; see ingest.py)."""
    validate_collection_name(req.collection)
    if not ctx.store.heartbeat():
        raise ServiceUnavailable(
            ctx.store.engine,
            f"{ctx.store.engine.capitalize()} is not running at {ctx.store.url}.",
            hint="Start the stack first: tunestack up",
        )
    ingestor = _ingestor(ctx, req)
    with ctx.collection_lock(req.collection, waiting):
        return _ingest_locked(ctx, ingestor, req, progress)


def _ingest_locked(
    ctx: RagContext, ingestor: Ingestor, req: IngestRequest, progress: Progress | None = None
) -> IngestReport:
    """Ingest holding the collection's lock, keeping its builds one set of documents."""
    store, emb, name = ctx.store, ingestor.embedder, req.collection
    store.sweep(name)
    builds = store.builds(name)
    others = [b for b in builds if b.embedder_fp != emb.fingerprint]
    if others and len(others) == len(builds):
        # a first build for this embedder starts from what the collection holds
        def copied(done: int, total: int) -> None:
            if progress:
                progress(f"copying {name} to {emb.name}", done, total)

        reindex(store, name, emb, ctx.settings.default_embedder, progress=copied)
    report = ingestor.ingest(req.paths, name, prune=req.prune, progress=progress)
    report.warnings += language_warnings(ctx, emb.name, report.mostly_cjk)
    if report.counts.get("ok", 0) or report.counts.get("removed", 0):
        when = time.strftime("%Y-%m-%dT%H:%M:%S")
        for b in others:
            store.mark_stale(
                b,
                f"{when}: documents changed in the {emb.name} build; run `tunestack reindex "
                f"{name} --embedder {b.embedder}`",
            )
    return report


def language_warnings(ctx: RagContext, embedder: str, mostly_cjk: list[str]) -> list[str]:
    """An English-only embedder given Chinese (Japanese, Korean) files retrieves from them
    barely better than at random (xquad.zh MRR@10 0.20 for MiniLM vs 0.94 for
    multilingual-e5-small): say so at ingest, when re-ingesting is cheap."""
    if not mostly_cjk:
        return []
    try:
        langs = ctx.registry.embedder(embedder).record.languages
    except TunestackError:
        return []
    if langs != ["en"]:
        return []
    shown = ", ".join(mostly_cjk[:3]) + (
        f" and {len(mostly_cjk) - 3} more" if len(mostly_cjk) > 3 else ""
    )
    return [
        f"{len(mostly_cjk)} file(s) are mostly Chinese/Japanese/Korean ({shown}), but embedder "
        f"'{embedder}' is English-only: retrieval from them will be poor. For such documents "
        "use --embedder multilingual-e5-small (a separate collection, or `tunestack reindex "
        "COLLECTION --embedder multilingual-e5-small`)."
    ]


def ingest_uploads(
    ctx: RagContext, files: list[tuple[str, BinaryIO]], req: IngestRequest
) -> IngestReport:
    """Store uploaded files under uploads/<collection>/ and ingest them; the report names
    files by their upload name, never by a server path."""
    validate_collection_name(req.collection)
    if not files:
        raise BadInput("No files were uploaded.", hint="Send one or more 'files' parts.")
    ingestor = _ingestor(ctx, req)  # a bad chunk_size/overlap is refused before any save
    dest = ctx.uploads / req.collection
    limit = ctx.settings.max_upload_mb * 2**20
    names = unique_names([name or "upload" for name, _ in files])
    with ctx.collection_lock(req.collection):
        saved = [
            save_upload(f, name, dest, limit) for name, (_, f) in zip(names, files, strict=True)
        ]
        report = _ingest_locked(ctx, ingestor, replace(req, paths=saved))
    for f in report.files:
        f.path = f.path.rsplit("/", 1)[-1]
    return report


INCOMING = ".incoming"  # uploads/.incoming/<id>/: uploads waiting for a queued ingest


def stage_uploads(
    ctx: RagContext, files: list[tuple[str, BinaryIO]], req: IngestRequest
) -> tuple[str, list[str]]:
    """Save uploads for a queued ingest (POST /v1/jobs/ingest) to a folder of their own,
    outside the collection (an ingest running now is not disturbed), and return it
    relative to TUNESTACK_HOME with the files' names. The request's own mistakes (a bad
    name, no files, an overlap past the chunk size, an unknown embedder) are refused here,
    before anything is saved or queued."""
    validate_collection_name(req.collection)
    if not files:
        raise BadInput("No files were uploaded.", hint="Send one or more 'files' parts.")
    check_chunking(ctx, req)
    if req.embedder is not None:
        ctx.registry.embedder(req.embedder)  # NotFound naming the registered ones
    folder = ctx.uploads / INCOMING / uuid.uuid4().hex[:12]
    limit = ctx.settings.max_upload_mb * 2**20
    names = unique_names([name or "upload" for name, _ in files])
    try:
        for name, (_, f) in zip(names, files, strict=True):
            save_upload(f, name, folder, limit)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return str(folder.relative_to(ctx.settings.home_dir)), names


def ingest_staged(
    ctx: RagContext,
    staged: str,
    names: list[str],
    req: IngestRequest,
    *,
    progress: Progress | None = None,
    waiting: Waiting | None = None,
) -> IngestReport:
    """The queued ingest: move the staged files into uploads/<collection>/ and ingest them,
    under the collection's lock. Run again (its worker died), it finds the files already
    moved and ingests them again, which changes nothing that was already stored."""
    ingestor = _ingestor(ctx, req)
    folder = ctx.settings.home_dir / staged
    dest = ctx.uploads / req.collection
    with ctx.collection_lock(req.collection, waiting):
        dest.mkdir(parents=True, exist_ok=True)
        for name in names:
            if (folder / name).exists():
                os.replace(folder / name, dest / name)
        paths = [dest / n for n in names if (dest / n).exists()]
        if not paths:
            raise BadInput(
                "The uploaded files of this job are gone.",
                hint="Upload them again (POST /v1/jobs/ingest).",
            )
        report = _ingest_locked(ctx, ingestor, replace(req, paths=paths), progress)
    shutil.rmtree(folder, ignore_errors=True)
    for f in report.files:
        f.path = f.path.rsplit("/", 1)[-1]
    return report


def reindex_collection(
    ctx: RagContext,
    collection: str,
    embedder: str,
    *,
    batch: int = 512,
    progress: Callable[[int, int], None] | None = None,
    waiting: Waiting | None = None,
) -> tuple[Build, int]:
    """Build `collection` for another embedder from its stored chunks."""
    validate_collection_name(collection)
    emb = ctx.pool.get(embedder)
    with ctx.collection_lock(collection, waiting):
        return reindex(
            ctx.store,
            collection,
            emb,
            ctx.settings.default_embedder,
            batch=batch,
            progress=progress,
        )


def list_collections(ctx: RagContext) -> list[CollectionInfo]:
    out: dict[str, CollectionInfo] = {}
    for b in ctx.store.builds():
        c = out.setdefault(b.name, CollectionInfo(name=b.name, builds=[]))
        c.builds.append(
            BuildInfo(
                embedder=b.embedder,
                embedder_fp=b.embedder_fp,
                chunks=ctx.store.count(b),
                created=b.metadata.get("created"),
                stale=b.stale,
            )
        )
    return list(out.values())


def delete_collection(ctx: RagContext, name: str) -> int:
    """Delete every embedder's build of `name` and its uploaded files; the number of
    builds deleted."""
    validate_collection_name(name)
    with ctx.collection_lock(name):
        n = ctx.store.delete(name)
        ctx.retriever.forget(name)
        atomic.remove_dir(ctx.uploads / name)
        atomic.sweep_stale(ctx.uploads)  # what a delete killed midway left
    return n
