"""Dense, BM25 and hybrid retrieval over a collection build.

Dense search goes through langchain-chroma's vector store (the object users extend
chains with); BM25 is bm25s over tokens stored at ingest; hybrid fuses both rankings
with reciprocal rank fusion, which needs no score calibration between the two.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from services.common.embedders import Embedder, EmbedderPool
from services.common.errors import BadInput, EmbedderMismatch, NotFound
from services.rag_api.bm25 import Bm25Cache, Bm25Index, rrf
from services.rag_api.store import SEP, Build, VectorStore

Mode = Literal["dense", "bm25", "hybrid"]
MODES: tuple[str, ...] = ("dense", "bm25", "hybrid")


def langchain_embeddings(embedder: Embedder) -> Any:
    """Our registry embedder behind LangChain's Embeddings interface (langchain is
    imported here, on first retrieval, not when the CLI merely loads this module)."""
    from langchain_core.embeddings import Embeddings

    class RegistryEmbeddings(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return embedder.encode(texts).tolist()

        def embed_query(self, text: str) -> list[float]:
            return embedder.encode([text], kind="query")[0].tolist()

    return RegistryEmbeddings()


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "embedder": self.embedder,
            "mode": self.mode,
            "took_ms": round(self.took_ms, 2),
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


class Retriever:
    def __init__(self, store: VectorStore, pool: EmbedderPool, default_embedder: str) -> None:
        self.store = store
        self.pool = pool
        self.default_embedder = default_embedder
        self.bm25 = Bm25Cache()
        # langchain vector stores per logical build, with the Chroma collection id they
        # hold: a build deleted and made again (or reindexed) has a new id, so its handle
        # is made again instead of querying a collection that no longer exists
        self._vs: dict[str, tuple[str, Any]] = {}
        self._lock = threading.Lock()

    def forget(self, collection: str) -> None:
        """Drop what is cached for `collection`'s builds (it was deleted)."""
        prefix = f"{collection}{SEP}"
        with self._lock:
            for key in [k for k in self._vs if k.startswith(prefix)]:
                del self._vs[key]
        self.bm25.drop(prefix)

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

    def vectorstore(self, build: Build, emb: Embedder) -> Any:
        from langchain_chroma import Chroma

        key = build.key
        with self._lock:
            held = self._vs.get(key)
            if held is not None and held[0] == build.id:
                return held[1]
            vs = self.store.call(
                lambda: Chroma(
                    client=self.store.client,
                    collection_name=build.physical,
                    embedding_function=langchain_embeddings(emb),
                    create_collection_if_not_exists=False,
                )
            )
            self._vs[key] = (build.id, vs)
            return vs

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
            hits = self._search(build, emb, query, mode, top_k)
        except NotFound:  # deleted or rebuilt since it was resolved: resolve it again
            self.forget(collection)
            build, emb = self.resolve(collection, embedder)
            hits = self._search(build, emb, query, mode, top_k)
        for i, h in enumerate(hits, start=1):
            h.rank = i
        return RetrievalResult(collection, emb.name, mode, hits, (time.perf_counter() - t0) * 1000)

    def _search(self, build: Build, emb: Embedder, query: str, mode: str, top_k: int) -> list[Hit]:
        if mode == "dense":
            hits = self._dense(build, emb, query, top_k)
        elif mode == "bm25":
            hits = self._bm25(build, query, top_k)
        else:
            depth = max(4 * top_k, 20)
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
        return hits

    def _dense(self, build: Build, emb: Embedder, query: str, k: int) -> list[Hit]:
        vs = self.vectorstore(build, emb)
        vec = emb.encode([query], kind="query")[0].tolist()
        pairs = self.store.call(
            lambda: vs.similarity_search_by_vector_with_relevance_scores(vec, k=k)
        )
        return [
            _hit(str(doc.id), doc.page_content, doc.metadata, 1.0 - float(dist))
            for doc, dist in pairs
        ]

    def _bm25(self, build: Build, query: str, k: int) -> list[Hit]:
        index = self.bm25_index(build)
        ranked = index.search(query, k)
        if not ranked:
            return []
        col = self.store.collection(build)
        ids = [i for i, _ in ranked]
        res = self.store.call(lambda: col.get(ids=ids, include=["documents", "metadatas"]))
        docs = {
            i: (d, m)
            for i, d, m in zip(res["ids"], res["documents"], res["metadatas"], strict=True)
        }
        return [_hit(i, docs[i][0], dict(docs[i][1] or {}), s) for i, s in ranked if i in docs]

    def bm25_index(self, build: Build) -> Bm25Index:
        version = self.store.version(build)
        cached = self.bm25.get(build.key, version)
        if cached is not None:
            return cached
        ids: list[str] = []
        toks: list[list[str]] = []
        for rec in self.store.iter_records(build, include=["metadatas"]):
            ids.append(rec["id"])
            toks.append(str((rec["metadatas"] or {}).get("bm25", "")).split())
        index = Bm25Index.build(ids, toks)
        self.bm25.put(build.key, version, index)
        return index
