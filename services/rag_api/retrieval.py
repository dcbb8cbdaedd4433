"""Dense, BM25 and hybrid retrieval over a collection build.

Dense search is the store's cosine search (Chroma or Milvus); BM25 is bm25s over tokens
stored at ingest, the same for both engines; hybrid fuses both rankings with reciprocal
rank fusion, which needs no score calibration between the two.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from services.common.embedders import Embedder, EmbedderPool
from services.common.errors import BadInput, EmbedderMismatch, NotFound
from services.rag_api.bm25 import Bm25Cache, Bm25Index, rrf
from services.rag_api.store import SEP, Build, VectorStore

Mode = Literal["dense", "bm25", "hybrid"]
MODES: tuple[str, ...] = ("dense", "bm25", "hybrid")


@dataclass
class Hit:
    id: str
    text: str
    source: str
    file_name: str
    chunk_index: int
    score: float
    rank: int = 0
    page: str | None = None
    scores: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RetrievalResult:
    collection: str
    embedder: str
    mode: str
    hits: list[Hit]
    took_ms: float
    # the relevance gate's inputs: the best cosine similarity dense search found (None in
    # bm25 mode, whose scores have no fixed scale) and the build's calibrated threshold
    best_dense: float | None = None
    min_relevance: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "embedder": self.embedder,
            "mode": self.mode,
            "took_ms": round(self.took_ms, 2),
            "best_dense": self.best_dense,
            "min_relevance": self.min_relevance,
            "hits": [h.to_dict() for h in self.hits],
        }


def _hit(id_: str, text: str, md: dict[str, Any], score: float) -> Hit:
    # `source` (the absolute path, ingest's key) never leaves the server: a hit names the
    # file relative to the folder it was ingested from (or the upload's name)
    return Hit(
        id=id_,
        text=text,
        source=str(md.get("rel_path") or md.get("file_name") or ""),
        file_name=str(md.get("file_name", "")),
        chunk_index=int(md.get("chunk_index", 0)),
        page=md.get("page"),
        score=score,
    )


def hybrid_depth(top_k: int) -> int:
    """How deep hybrid reads each list (dense, BM25) before fusing them: a passage ranked
    low in one list can still reach the top k on the strength of the other."""
    return max(4 * top_k, 20)


class Retriever:
    def __init__(self, store: VectorStore, pool: EmbedderPool, default_embedder: str) -> None:
        self.store = store
        self.pool = pool
        self.default_embedder = default_embedder
        self.bm25 = Bm25Cache()

    def forget(self, collection: str) -> None:
        """Drop what is cached for `collection`'s builds (it was deleted)."""
        self.bm25.drop(f"{collection}{SEP}")

    def resolve(self, collection: str, embedder: str | None) -> tuple[Build, Embedder]:
        if embedder is not None:
            emb = self.pool.get(embedder)
            build = self.store.resolve(collection, emb.name, emb.fingerprint, self.default_embedder)
            return build, emb
        build = self.store.resolve(collection, None, None, self.default_embedder)
        emb = self.pool.get(build.embedder)
        if emb.fingerprint != build.embedder_fp:
            raise EmbedderMismatch(
                f"Collection '{collection}' was built with embedder '{build.embedder}' "
                f"({build.embedder_fp}), but that name now has fingerprint {emb.fingerprint}.",
                hint=f"Run `tunestack reindex {collection} --embedder {build.embedder}`.",
            )
        return build, emb

    def retrieve(
        self,
        collection: str,
        query: str,
        *,
        mode: str = "dense",
        top_k: int = 4,
        embedder: str | None = None,
    ) -> RetrievalResult:
        if mode not in MODES:
            raise BadInput(f"Unknown retrieval mode '{mode}'.", hint="Use dense, bm25 or hybrid.")
        if not query.strip():
            raise BadInput("The query is empty.", hint="Ask a question.")
        if not 1 <= top_k <= 100:
            raise BadInput("top_k must be between 1 and 100.")
        t0 = time.perf_counter()
        build, emb = self.resolve(collection, embedder)
        try:
            hits, best = self._search(build, emb, query, mode, top_k)
        except NotFound:  # deleted or rebuilt since it was resolved: resolve it again
            self.forget(collection)
            build, emb = self.resolve(collection, embedder)
            hits, best = self._search(build, emb, query, mode, top_k)
        for i, h in enumerate(hits, start=1):
            h.rank = i
        took = (time.perf_counter() - t0) * 1000
        return RetrievalResult(collection, emb.name, mode, hits, took, best, build.min_relevance)

    def _search(
        self, build: Build, emb: Embedder, query: str, mode: str, top_k: int
    ) -> tuple[list[Hit], float | None]:
        """The hits, and the best dense similarity (hybrid: of its whole dense list)."""
        if mode == "dense":
            hits = self._dense(build, emb, query, top_k)
            return hits, max((h.score for h in hits), default=None)
        if mode == "bm25":
            return self._bm25(build, query, top_k), None
        depth = hybrid_depth(top_k)
        dense = self._dense(build, emb, query, depth)
        sparse = self._bm25(build, query, depth)
        by_id = {h.id: h for h in sparse} | {h.id: h for h in dense}
        fused = rrf([[h.id for h in dense], [h.id for h in sparse]])[:top_k]
        hits = []
        for id_, score in fused:
            h = by_id[id_]
            parts = {
                "dense": next((d.score for d in dense if d.id == id_), 0.0),
                "bm25": next((s.score for s in sparse if s.id == id_), 0.0),
            }
            hits.append(Hit(**{**asdict(h), "score": score, "scores": parts}))
        return hits, max((h.score for h in dense), default=None)

    def _dense(self, build: Build, emb: Embedder, query: str, k: int) -> list[Hit]:
        vec = emb.encode([query], kind="query")[0].tolist()
        return [
            _hit(r.id, r.document, r.metadata, r.score) for r in self.store.search(build, vec, k)
        ]

    def _bm25(self, build: Build, query: str, k: int) -> list[Hit]:
        index = self.bm25_index(build)
        ranked = index.search(query, k)
        if not ranked:
            return []
        docs = {r.id: r for r in self.store.get(build, [i for i, _ in ranked])}
        return [_hit(i, docs[i].document, docs[i].metadata, s) for i, s in ranked if i in docs]

    def bm25_index(self, build: Build) -> Bm25Index:
        version = self.store.version(build)
        cached = self.bm25.get(build.key, version)
        if cached is not None:
            return cached
        # in id order, not the engine's storage order: bm25s breaks score ties by position,
        # so Chroma and Milvus (and a rebuilt index) rank tied chunks alike
        rows = sorted(
            (rec["id"], str((rec["metadatas"] or {}).get("bm25", "")).split())
            for rec in self.store.iter_records(build, include=["metadatas"])
        )
        index = Bm25Index.build([i for i, _ in rows], [t for _, t in rows])
        self.bm25.put(build.key, version, index)
        return index
