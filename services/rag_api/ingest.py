"""Idempotent, crash-safe ingestion of files into a collection build (Chroma or Milvus).

Idempotency: chunk ids are derived from (source path, content hash, chunk index), and a
file counts as done only when every chunk of its current hash is present and no chunk of
an older hash remains. So a rerun after kill -9 upserts the same ids (no duplicates),
finishes files that were cut off, and skips files that are complete.

Atomicity per file: a file is read, chunked and embedded completely before anything is
written, so an unreadable file never leaves partial chunks.

Hostile files (a zip bomb, a PDF of 100,000 pages) are bounded by loaders.LoadLimits:
refused with the reason in the report, or read up to the caps with a note there.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from services.common.documents import loaders
from services.common.documents.chunking import Chunker
from services.common.documents.files import expand
from services.common.embedders import Embedder
from services.common.errors import BadInput
from services.common.hashing import file_sha256
from services.rag_api.bm25 import tokenize
from services.rag_api.store import Build, VectorStore

if TYPE_CHECKING:
    from services.rag_api.settings import RagSettings

Status = Literal["ok", "unchanged", "failed", "removed", "skipped"]
Progress = Callable[[str, int, int], None]


@dataclass
class FileResult:
    path: str
    status: Status
    chunks: int = 0
    reason: str = ""


@dataclass
class IngestReport:
    collection: str
    embedder: str
    files: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0
    mostly_cjk: list[str] = field(default_factory=list)  # files written mostly in CJK script
    warnings: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.files:
            out[f.status] = out.get(f.status, 0) + 1
        return out

    @property
    def chunks_written(self) -> int:
        return sum(f.chunks for f in self.files if f.status == "ok")

    def to_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "embedder": self.embedder,
            "counts": self.counts,
            "chunks_written": self.chunks_written,
            "seconds": round(self.seconds, 3),
            "files": [asdict(f) for f in self.files],
            "warnings": self.warnings,
        }


def _cjk_share(texts: list[str]) -> float:
    """Share of a file's letters that are Chinese, Japanese or Korean characters."""
    letters = cjk = 0
    for t in texts:
        for ch in t:
            if ch.isalpha():
                letters += 1
                cjk += "\u3040" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af"
    return cjk / letters if letters else 0.0


@dataclass
class _Pending:
    source: str
    content_hash: str
    texts: list[str]
    pages: list[str | None]
    note: str = ""  # what the caps left out (loaders.LoadLimits), shown as the reason


def load_limits(s: RagSettings) -> loaders.LoadLimits:
    """The read caps the settings ask for (TUNESTACK_RAG_MAX_PDF_PAGES, ...)."""
    return loaders.LoadLimits(
        max_pages=s.max_pdf_pages,
        max_chars=s.max_text_chars,
        max_unzipped_bytes=s.max_docx_unzipped_mb * loaders.MB,
        max_zip_ratio=s.max_zip_ratio,
    )


def chunk_id(source: str, content_hash: str, index: int) -> str:
    src = hashlib.sha256(source.encode()).hexdigest()[:16]
    return f"{src}-{content_hash[:16]}-{index:05d}"


class Ingestor:
    def __init__(
        self,
        store: VectorStore,
        embedder: Embedder,
        *,
        chunk_size: int,
        chunk_overlap: int,
        max_file_bytes: int,
        encode_batch: int = 512,
        limits: loaders.LoadLimits = loaders.DEFAULT_LIMITS,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.chunker = Chunker(chunk_size, chunk_overlap, embedder.tokens)
        self.max_file_bytes = max_file_bytes
        self.limits = limits
        self.encode_batch = encode_batch
        self._roots: list[Path] = []  # the paths of the current ingest (see _relative)

    def ingest(
        self,
        paths: list[Path],
        collection: str,
        *,
        prune: bool = False,
        progress: Progress | None = None,
    ) -> IngestReport:
        t0 = time.perf_counter()
        report = IngestReport(collection, self.embedder.name)
        self._roots = [r.expanduser().resolve() for r in paths]
        files, skipped = expand(paths)
        problems = [FileResult(p.path, "failed", reason=p.reason) for p in skipped]
        report.files.extend(problems)
        if not files and not prune:
            if not problems:
                raise BadInput(
                    "No supported documents found in " + ", ".join(map(str, paths)) + ".",
                    hint="Supported: " + ", ".join(loaders.SUPPORTED_SUFFIXES),
                )
            report.seconds = time.perf_counter() - t0
            return report
        build = self.store.create(
            collection,
            self.embedder.name,
            self.embedder.fingerprint,
            self.embedder.dimension,
            extra={
                "chunk_size": self.chunker.chunk_size,
                "chunk_overlap": self.chunker.chunk_overlap,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            },
        )
        manifest = self._manifest(build)
        changed = False
        pending: list[_Pending] = []
        # Writes go to the store on one background thread while the next batch is read,
        # chunked and embedded; at most one write is in flight, so memory stays bounded.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-write") as writer:
            inflight: Future[list[FileResult]] | None = None

            def flush() -> None:
                nonlocal inflight, pending, changed
                batch = self._embed(pending)
                if inflight:
                    report.files.extend(inflight.result())
                inflight = writer.submit(self._write, build, batch, pending, manifest)
                pending, changed = [], True

            for i, path in enumerate(files):
                if progress:
                    progress(path.name, i, len(files))
                item = self._prepare(path, manifest)
                if isinstance(item, FileResult):
                    report.files.append(item)
                    continue
                if _cjk_share(item.texts) > 0.3:
                    report.mostly_cjk.append(self._relative(item.source))
                pending.append(item)
                if sum(len(p.texts) for p in pending) >= self.encode_batch:
                    flush()
            if pending:
                flush()
            if inflight:
                report.files.extend(inflight.result())
        if prune:
            removed = self._prune(build, manifest, paths)
            report.files.extend(removed)
            changed = changed or bool(removed)
        if changed:
            self.store.touch(build)
        if progress:
            progress("done", len(files), len(files))
        report.files.sort(key=lambda f: f.path)
        report.seconds = time.perf_counter() - t0
        return report

    # ---- internals --------------------------------------------------------------
    def _relative(self, source: str) -> str:
        """The file as clients see it: relative to the folder it was ingested from (a
        file given by itself: its name). The absolute `source` stays the server's key."""
        path = Path(source)
        for root in self._roots:
            if root.is_dir() and path.is_relative_to(root):
                return path.relative_to(root).as_posix()
        return path.name

    def _prepare(self, path: Path, manifest: dict[str, Any]) -> _Pending | FileResult:
        """Read and chunk one file, or say why not (unchanged, unreadable)."""
        source = str(path)
        try:
            data_hash = file_sha256(path)
        except OSError as e:
            return FileResult(source, "failed", reason=str(e))
        if _complete(manifest.get(source), data_hash):
            return FileResult(source, "unchanged", manifest[source][data_hash][0])
        try:
            texts: list[str] = []
            pages: list[str | None] = []
            notes: list[str] = []
            for sec in loaders.load(path, self.max_file_bytes, self.limits, notes):
                for c in self.chunker.split(sec.text):
                    texts.append(c)
                    pages.append(sec.page)
            if not texts:
                raise loaders.UnreadableFile("no text after chunking")
        except loaders.UnreadableFile as e:
            return FileResult(source, "failed", reason=str(e))
        except Exception as e:  # a reader bug must not stop the other files
            return FileResult(source, "failed", reason=f"{type(e).__name__}: {e}")
        return _Pending(source, data_hash, texts, pages, _summary(notes))

    def _manifest(self, build: Build) -> dict[str, dict[str, tuple[int, int]]]:
        """source -> content_hash -> (chunks present, chunks expected)."""
        out: dict[str, dict[str, list[int]]] = {}
        for rec in self.store.iter_records(build, include=["metadatas"]):
            md = rec["metadatas"] or {}
            per = out.setdefault(str(md.get("source")), {})
            h = str(md.get("content_hash"))
            cur = per.setdefault(h, [0, int(md.get("n_chunks", 0))])
            cur[0] += 1
        return {s: {h: (v[0], v[1]) for h, v in d.items()} for s, d in out.items()}

    def _embed(self, pending: list[_Pending]) -> dict[str, Any]:
        """One encode call for every pending chunk: sentence-transformers sorts them by
        length, so there is less padding than with one call per file."""
        vecs = self.embedder.encode([t for p in pending for t in p.texts])
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        ids: list[str] = []
        docs: list[str] = []
        metas: list[dict[str, Any]] = []
        for p in pending:
            n = len(p.texts)
            for i, (text, page) in enumerate(zip(p.texts, p.pages, strict=True)):
                md: dict[str, Any] = {
                    "source": p.source,
                    "file_name": Path(p.source).name,
                    "rel_path": self._relative(p.source),
                    "chunk_index": i,
                    "n_chunks": n,
                    "content_hash": p.content_hash,
                    "embedder": self.embedder.name,
                    "embedder_fp": self.embedder.fingerprint,
                    "bm25": " ".join(tokenize(text)),
                    "ingested_at": now,
                }
                if page:
                    md["page"] = page
                ids.append(chunk_id(p.source, p.content_hash, i))
                docs.append(text)
                metas.append(md)
        return {"ids": ids, "embeddings": vecs, "documents": docs, "metadatas": metas}

    def _write(
        self,
        build: Build,
        batch: dict[str, Any],
        pending: list[_Pending],
        manifest: dict[str, Any],
    ) -> list[FileResult]:
        """Upsert a batch (the store batches it), then delete stale chunks of changed files."""
        self.store.upsert(build, **batch)
        results = []
        for p in pending:
            if any(h != p.content_hash for h in manifest.get(p.source, {})):
                stale = {"$and": [{"source": p.source}, {"content_hash": {"$ne": p.content_hash}}]}
                self.store.delete_where(build, stale)
            manifest[p.source] = {p.content_hash: (len(p.texts), len(p.texts))}
            results.append(FileResult(p.source, "ok", len(p.texts), reason=p.note))
        return results

    def _prune(self, build: Build, manifest: dict[str, Any], roots: list[Path]) -> list[FileResult]:
        """Remove chunks of files that no longer exist under the given roots."""
        resolved = [r.expanduser().resolve() for r in roots]
        out = []
        for source in sorted(manifest):
            src = Path(source)
            under = any(src == r or r in src.parents for r in resolved)
            if under and not src.exists():
                n = sum(c for c, _ in manifest[source].values())
                self.store.delete_where(build, {"source": source})
                out.append(FileResult(source, "removed", n, reason="file no longer exists"))
        for r in out:
            manifest.pop(r.path, None)
        return out


def _summary(notes: list[str], most: int = 3) -> str:
    """Notes for the report's reason column: the first few, and how many more."""
    more = f"; and {len(notes) - most} more notes" if len(notes) > most else ""
    return "; ".join(notes[:most]) + more


def _complete(per_hash: dict[str, tuple[int, int]] | None, data_hash: str) -> bool:
    if not per_hash or set(per_hash) != {data_hash}:
        return False
    present, expected = per_hash[data_hash]
    return present == expected > 0
