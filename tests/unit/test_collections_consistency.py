"""Collections stay consistent (issue "Consistency"): on a real Chroma server (`chroma run`,
started here as `tunestack up` does), with the real service layer and the real app;
only the embedders are small deterministic stand-ins (no model is loaded).

Each test names what was broken: a delete then re-create answered 500 (a cached handle on
the deleted Chroma collection), a reindex wrote into the served build and kept chunks the
source had dropped, a crashed reindex became the default build, an ingest into one build
left the others silently behind, uploads outlived their collection and two parts with one
name overwrote each other, and Chroma's own errors left as 500s.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from services.common.errors import (
    BadInput,
    Conflict,
    NotFound,
    ServiceUnavailable,
    TunestackError,
)
from services.common.locks import collection_lock
from services.rag_api import collections as svc
from services.rag_api.app import create_app
from services.rag_api.context import RagContext
from services.rag_api.reindex import reindex
from services.rag_api.retrieval import Retriever
from services.rag_api.settings import RagSettings
from services.rag_api.store import BUILDING, Build, VectorStore
from services.rag_api.store_chroma import ChromaStore, chroma_error
from tests.conftest import free_port

LOCAL = "http://127.0.0.1:8000"
DIM = 16


# ---- a real Chroma, small embedders -----------------------------------------------------------


@pytest.fixture(scope="module")
def chroma(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("chroma")
    port = free_port()
    exe = Path(sys.executable).parent / "chroma"
    argv = [str(exe), "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/api/v2/heartbeat", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            pytest.fail("chroma run did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(20)


@dataclass
class FakeEmbedder:
    """An embedder's interface without a model: one token per character, and a vector
    per text from its words' hashes (texts sharing words are near each other)."""

    name: str
    fingerprint: str
    dimension: int = DIM
    fail_on_call: int | None = None  # raise on this encode call (1-based): a crash
    calls: int = 0

    def tokens(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def encode(self, texts: list[str], **_: Any) -> np.ndarray:
        self.calls += 1
        if self.fail_on_call is not None and self.calls >= self.fail_on_call:
            raise RuntimeError("killed mid-reindex")
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, text in enumerate(texts):
            for w in text.lower().split():
                h = hashlib.sha256((self.fingerprint + w).encode()).digest()
                out[i, h[0] % self.dimension] += 1.0
            out[i] /= max(float(np.linalg.norm(out[i])), 1e-6)
        return out


class FakePool:
    def __init__(self, *embedders: FakeEmbedder) -> None:
        self.by_name = {e.name: e for e in embedders}

    def get(self, name: str) -> FakeEmbedder:
        if name not in self.by_name:
            raise NotFound(f"Embedder '{name}' is not registered.")
        return self.by_name[name]


def rag_settings(home: Path, chroma: str, **kw: Any) -> RagSettings:
    base: dict[str, Any] = {
        "home": home,
        "chroma_url": chroma,
        "warm_embedder": False,
        "default_embedder": "emb-a",
        "llm_base_url": f"http://127.0.0.1:{free_port()}/v1",
        "chunk_size": 64,
        "chunk_overlap": 8,
    }
    return RagSettings(**{**base, **kw})


def with_fakes(ctx: RagContext, pool: FakePool) -> RagContext:
    ctx.pool = pool  # type: ignore[assignment]
    ctx.retriever = Retriever(ctx.store, pool, ctx.settings.default_embedder)  # type: ignore[arg-type]
    return ctx


def embedders() -> FakePool:
    return FakePool(FakeEmbedder("emb-a", "aaaa1111"), FakeEmbedder("emb-b", "bbbb2222"))


@pytest.fixture
def ctx(tmp_path: Path, chroma: str) -> RagContext:
    return with_fakes(RagContext.from_settings(rag_settings(tmp_path, chroma)), embedders())


@pytest.fixture
def api(tmp_path: Path, chroma: str) -> Iterator[TestClient]:
    app = create_app(rag_settings(tmp_path, chroma))
    with_fakes(app.state.tunestack, embedders())
    with TestClient(app, base_url=LOCAL, raise_server_exceptions=False) as c:
        yield c


def unique(name: str, request: pytest.FixtureRequest) -> str:
    """A collection name of its own per test (the Chroma server is shared)."""
    return f"{name}-{hashlib.sha256(request.node.name.encode()).hexdigest()[:8]}"


def upload(c: TestClient, collection: str, *files: tuple[str, str], **form: Any) -> Any:
    parts = [("files", (name, text.encode(), "text/markdown")) for name, text in files]
    return c.post("/v1/ingest", data={"collection": collection, **form}, files=parts)


def retrieve(c: TestClient, collection: str, query: str, mode: str = "dense") -> Any:
    return c.post("/v1/retrieve", json={"collection": collection, "query": query, "mode": mode})


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder / name


def ids(store: VectorStore, build: Build) -> set[str]:
    return {r["id"] for r in store.iter_records(build, include=[])}


def build_of(store: VectorStore, name: str, embedder: str) -> Build:
    (b,) = [b for b in store.builds(name) if b.embedder == embedder]
    return b


def fill(store: VectorStore, emb: FakeEmbedder, name: str, docs: dict[str, str]) -> Build:
    """A build written directly (no files): chunk id -> text."""
    build = store.create(name, emb.name, emb.fingerprint, emb.dimension)
    col = store.collection(build)
    texts = list(docs.values())
    metas = [{"source": f"/docs/{i}.md", "file_name": f"{i}.md"} for i in docs]
    col.upsert(ids=list(docs), embeddings=emb.encode(texts), documents=texts, metadatas=metas)
    return build


# ---- 1. delete, then create again: no restart needed --------------------------------------------


def test_delete_then_recreate_then_retrieve_answers_without_a_restart(
    api: TestClient, request: pytest.FixtureRequest
) -> None:
    """Was: 500 `NotFoundError: Collection [...] does not exist` (the retriever kept its
    langchain handle on the deleted Chroma collection, keyed by the physical name)."""
    kb = unique("kb", request)
    assert upload(api, kb, ("a.md", "Apples are red and sweet.")).status_code == 200
    for mode in ("dense", "bm25", "hybrid"):
        assert retrieve(api, kb, "red apples", mode).status_code == 200
    r = api.delete(f"/v1/collections/{kb}")
    assert r.status_code == 200 and r.json()["builds"] == 1, r.text
    assert retrieve(api, kb, "red apples").status_code == 404
    assert upload(api, kb, ("b.md", "Bananas are yellow and long.")).status_code == 200
    for mode in ("dense", "bm25", "hybrid"):
        r = retrieve(api, kb, "yellow bananas", mode)
        assert r.status_code == 200, r.text
        assert [h["source"] for h in r.json()["hits"]] == ["b.md"], r.text


def test_a_collection_made_again_by_another_process_is_followed(
    ctx: RagContext, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The CLI (another process) deletes and ingests again: this process's cached handle
    must not outlive the Chroma collection it points at."""
    kb = unique("kb", request)
    docs = tmp_path / "docs"
    svc.ingest(ctx, svc.IngestRequest([write(docs, "a.md", "Cherries are dark red.")], kb))
    assert ctx.retriever.retrieve(kb, "cherries").hits
    other = ChromaStore(ctx.settings.chroma_url)  # what `tunestack collections delete` does
    assert other.delete(kb) == 1
    (docs / "a.md").unlink()
    svc.ingest(ctx, svc.IngestRequest([write(docs, "b.md", "Plums are purple.")], kb))
    hits = ctx.retriever.retrieve(kb, "purple plums").hits
    assert [h.file_name for h in hits] == ["b.md"]


# ---- 2. reindex: staged, published whole, nothing stale survives ---------------------------------


def test_reindex_drops_target_chunks_the_source_no_longer_has(
    ctx: RagContext, request: pytest.FixtureRequest
) -> None:
    """Was: the reindex upserted into the existing target build, so a chunk deleted from
    the source since the last reindex stayed in the target for ever."""
    name = unique("re", request)
    a, b = ctx.pool.get("emb-a"), ctx.pool.get("emb-b")
    source = fill(ctx.store, a, name, {"c1": "one fish", "c2": "two fish", "c3": "red fish"})
    old = fill(ctx.store, b, name, {"c1": "one fish", "c2": "two fish", "gone": "blue fish"})
    build, n = reindex(ctx.store, name, b, "emb-a")  # type: ignore[arg-type]
    assert n == 3 and ids(ctx.store, build) == {"c1", "c2", "c3"}
    assert build.id != old.id and ids(ctx.store, source) == {"c1", "c2", "c3"}
    assert [x.embedder for x in ctx.store.builds(name)] == ["emb-a", "emb-b"]


def test_a_crashed_reindex_never_becomes_the_served_build(
    ctx: RagContext, request: pytest.FixtureRequest
) -> None:
    """Was: the target build was visible (and, as the newest or the default embedder's,
    the one queries got) from its first chunk on; a reindex killed midway left it so."""
    name = unique("crash", request)
    a = ctx.pool.get("emb-a")
    fill(ctx.store, a, name, {f"c{i}": f"chunk number {i}" for i in range(10)})
    # the default embedder is now emb-b: its build, once there, is what queries get
    crashing = FakeEmbedder("emb-b", "bbbb2222", fail_on_call=2)
    with pytest.raises(RuntimeError):
        reindex(ctx.store, name, crashing, "emb-b", batch=3)  # type: ignore[arg-type]
    assert [b.embedder for b in ctx.store.builds(name)] == ["emb-a"]
    assert ctx.store.resolve(name, None, None, "emb-b").embedder == "emb-a"
    # kill -9 midway: the staging build stays behind, unpublished, and is never served
    b = ctx.pool.get("emb-b")
    staged = ctx.store.stage(name, b.name, b.fingerprint, b.dimension)
    ctx.store.collection(staged).upsert(ids=["c0"], embeddings=b.encode(["chunk"]))
    assert staged.metadata["tunestack"] == BUILDING
    assert [x.embedder for x in ctx.store.builds(name)] == ["emb-a"]
    assert ctx.store.resolve(name, None, None, "emb-b").embedder == "emb-a"
    with pytest.raises(TunestackError):  # asking for emb-b: not built (yet)
        ctx.store.resolve(name, "emb-b", None, "emb-b")
    # the next writer sweeps the leftover; a whole reindex is then what is served
    build, n = reindex(ctx.store, name, b, "emb-b")  # type: ignore[arg-type]
    assert n == 10 and ctx.store.resolve(name, None, None, "emb-b").id == build.id
    left = [c.name for c in ctx.store.client.list_collections() if c.name.startswith(name)]
    assert sorted(left) == sorted(x.physical for x in ctx.store.builds(name))


def test_reindex_over_an_existing_build_swaps_it_whole(
    ctx: RagContext, request: pytest.FixtureRequest
) -> None:
    """The previous target build is served, untouched, until the new one is complete."""
    name = unique("swap", request)
    a, b = ctx.pool.get("emb-a"), ctx.pool.get("emb-b")
    fill(ctx.store, a, name, {f"c{i}": f"new text {i}" for i in range(6)})
    old = fill(ctx.store, b, name, {"c0": "old text"})
    crashing = FakeEmbedder("emb-b", "bbbb2222", fail_on_call=2)
    with pytest.raises(RuntimeError):
        reindex(ctx.store, name, crashing, "emb-a", batch=2)  # type: ignore[arg-type]
    assert build_of(ctx.store, name, "emb-b").id == old.id
    assert ids(ctx.store, old) == {"c0"}
    got = ctx.store.collection(old).get(ids=["c0"], include=["documents"])
    assert got["documents"] == ["old text"]
    build, n = reindex(ctx.store, name, b, "emb-a")  # type: ignore[arg-type]
    assert n == 6 and build_of(ctx.store, name, "emb-b").id == build.id
    with pytest.raises(NotFound):  # the replaced build is gone (after the publish)
        ctx.store.collection(old)


# ---- 2. ingest keeps builds in step, or says which are stale -----------------------------------


def test_ingest_marks_the_other_builds_stale_until_reindexed(
    api: TestClient, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Was: an ingest into the emb-a build left the emb-b build without the new document,
    and nothing (API, CLI) said so."""
    ctx: RagContext = api.app.state.tunestack  # type: ignore[attr-defined]
    name = unique("st", request)
    docs = tmp_path / "docs"
    svc.ingest(ctx, svc.IngestRequest([write(docs, "a.md", "Kiwis are green.")], name))
    svc.reindex_collection(ctx, name, "emb-b")

    def states() -> dict[str, str | None]:
        cols = api.get("/v1/collections").json()["collections"]
        (col,) = [c for c in cols if c["name"] == name]
        return {b["embedder"]: b["stale"] for b in col["builds"]}

    assert states() == {"emb-a": None, "emb-b": None}
    write(docs, "b.md", "Limes are green and sour.")
    report = svc.ingest(ctx, svc.IngestRequest([docs], name))
    assert report.counts == {"ok": 1, "unchanged": 1}
    now = states()
    assert now["emb-a"] is None and now["emb-b"] is not None
    assert f"tunestack reindex {name} --embedder emb-b" in now["emb-b"]
    # `tunestack collections list` says so too
    env = {"TUNESTACK_HOME": str(tmp_path), "TUNESTACK_CHROMA_URL": ctx.settings.chroma_url}
    from platform_cli.main import app as cli

    out = CliRunner().invoke(cli, ["collections", "list", "--json"], env=env)
    assert out.exit_code == 0, out.output
    assert f'"stale": "{now["emb-b"]}"' in out.output.replace("\n", "")
    out = CliRunner().invoke(cli, ["collections", "list"], env=env, terminal_width=200)
    assert "stale" in out.output and f"{name} (emb-b) is stale" in out.output
    # an ingest that changes nothing marks nothing; a reindex brings emb-b up to date
    svc.reindex_collection(ctx, name, "emb-b")
    assert states() == {"emb-a": None, "emb-b": None}
    assert svc.ingest(ctx, svc.IngestRequest([docs], name)).counts == {"unchanged": 2}
    assert states() == {"emb-a": None, "emb-b": None}
    a, b = build_of(ctx.store, name, "emb-a"), build_of(ctx.store, name, "emb-b")
    assert ids(ctx.store, a) == ids(ctx.store, b)


def test_a_first_ingest_with_another_embedder_starts_from_the_collection(
    ctx: RagContext, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Was: the new embedder's build held only the files of that one ingest."""
    name = unique("two", request)
    one, two = tmp_path / "one", tmp_path / "two"
    svc.ingest(ctx, svc.IngestRequest([write(one, "a.md", "Figs are soft.")], name))
    req = svc.IngestRequest([write(two, "b.md", "Dates are sweet.")], name, embedder="emb-b")
    assert svc.ingest(ctx, req).counts == {"ok": 1}
    a, b = build_of(ctx.store, name, "emb-a"), build_of(ctx.store, name, "emb-b")
    assert len(ids(ctx.store, b)) == len(ids(ctx.store, a)) + 1
    assert b.stale is None and a.stale is not None
    hits = ctx.retriever.retrieve(name, "soft figs", embedder="emb-b").hits
    assert "a.md" in {h.file_name for h in hits}


# ---- 3. uploads ---------------------------------------------------------------------------


def test_uploads_are_deleted_with_their_collection(
    api: TestClient, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    kb = unique("up", request)
    assert upload(api, kb, ("a.md", "Pears are green.")).status_code == 200
    assert (tmp_path / "uploads" / kb / "a.md").is_file()
    assert api.delete(f"/v1/collections/{kb}").status_code == 200
    assert not (tmp_path / "uploads" / kb).exists()
    assert [p.name for p in (tmp_path / "uploads").iterdir()] == []


def test_two_parts_with_the_same_file_name_are_both_kept(
    api: TestClient, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Was: the second `notes.md` overwrote the first before the ingest read either."""
    kb = unique("dup", request)
    r = upload(
        api, kb, ("notes.md", "Alpha notes about oranges."), ("notes.md", "Beta notes on grapes.")
    )
    assert r.status_code == 200, r.text
    files = {f["path"]: f["status"] for f in r.json()["files"]}
    assert files == {"notes.md": "ok", "notes (2).md": "ok"}
    folder = tmp_path / "uploads" / kb
    texts = sorted(p.read_text() for p in folder.iterdir())
    assert texts == ["Alpha notes about oranges.", "Beta notes on grapes."]
    for query, source in (("oranges", "notes.md"), ("grapes", "notes (2).md")):
        hits = retrieve(api, kb, query, "bm25").json()["hits"]
        assert hits[0]["source"] == source


def test_uploads_are_saved_inside_the_collection_lock(
    api: TestClient, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """While another writer (a CLI ingest, a reindex, a delete) holds the collection, an
    upload writes nothing; it goes on once the lock is free."""
    kb = unique("lock", request)
    out: dict[str, Any] = {}
    with collection_lock(tmp_path, kb):
        t = threading.Thread(
            target=lambda: out.update(r=upload(api, kb, ("a.md", "Melons are big.")))
        )
        t.start()
        time.sleep(1.5)
        assert not (tmp_path / "uploads" / kb).exists()
        assert t.is_alive()
    t.join(60)
    assert out["r"].status_code == 200 and (tmp_path / "uploads" / kb / "a.md").is_file()


# ---- 4. Chroma's errors are ours ----------------------------------------------------------------


def test_chroma_errors_map_to_clear_4xx_and_503(
    ctx: RagContext, request: pytest.FixtureRequest
) -> None:
    """Was: anything but a connection failure left as Chroma's exception (a 500)."""
    store = ctx.store
    a = ctx.pool.get("emb-a")
    build = fill(store, a, unique("err", request), {"c1": "text"})
    gone = Build(build.name, "emb-a", a.fingerprint, "no-such-collection", {})
    with pytest.raises(NotFound) as nf:
        store.collection(gone)
    assert nf.value.status_code == 404 and "no-such-collection" in nf.value.message
    col = store.collection(build)
    with pytest.raises(BadInput) as bad:  # a vector of the wrong dimension
        store.call(col.upsert, ids=["x"], embeddings=[[0.1] * (DIM + 1)])
    assert bad.value.status_code == 422 and "dimension" in bad.value.message
    with pytest.raises(Conflict):  # a name that is taken
        store.call(store.client.create_collection, build.physical)
    from chromadb.api.base_http_client import BaseHTTPClient
    from chromadb.errors import InternalError

    down = chroma_error(InternalError("compaction failed"))
    assert isinstance(down, ServiceUnavailable) and down.service == "chroma"
    assert down.status_code == 503
    # an error kind the client does not know arrives as a bare Exception with the body
    body = '{"error": "SomethingNew", "message": "the log is full"}'
    resp = httpx.Response(500, text=body, request=httpx.Request("GET", "http://chroma"))
    with pytest.raises(ServiceUnavailable) as unknown:
        store.call(BaseHTTPClient._raise_chroma_error, resp)
    assert unknown.value.message == "Chroma failed: the log is full"


def test_a_chroma_error_reaches_the_client_as_4xx_not_500(
    api: TestClient, request: pytest.FixtureRequest
) -> None:
    ctx: RagContext = api.app.state.tunestack  # type: ignore[attr-defined]
    kb = unique("dim", request)
    assert upload(api, kb, ("a.md", "Grapes grow on vines.")).status_code == 200
    # the registered embedder changes its output size under the same fingerprint
    ctx.pool.get("emb-a").dimension = DIM * 2  # type: ignore[attr-defined]
    r = retrieve(api, kb, "vines")
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "BadInput" and "dimension" in r.json()["message"]


# ---- 5. chunk_overlap >= chunk_size is refused before anything is saved ------------------------


def test_overlap_not_smaller_than_the_chunk_is_422_before_anything_is_saved(
    api: TestClient, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    ctx: RagContext = api.app.state.tunestack  # type: ignore[attr-defined]
    kb = unique("ov", request)
    for form in ({"chunk_size": 32, "chunk_overlap": 32}, {"chunk_size": 32, "chunk_overlap": 40}):
        r = upload(api, kb, ("a.md", "Dates are sweet."), **form)
        assert r.status_code == 422, r.text
        assert "chunk_overlap" in r.json()["message"]
    r = upload(api, kb, ("a.md", "Dates are sweet."), chunk_size=16)  # the default overlap: 8
    assert r.status_code == 200, r.text
    assert not ctx.store.builds(kb + "x")
    r = upload(api, kb + "x", ("a.md", "Dates are sweet."), chunk_size=16, chunk_overlap=16)
    assert r.status_code == 422
    assert not (tmp_path / "uploads" / (kb + "x")).exists() and not ctx.store.builds(kb + "x")
