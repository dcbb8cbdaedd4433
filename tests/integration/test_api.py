"""The RAG API under uvicorn with a real Chroma and the real llama.cpp server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import SAMPLES, free_port
from tests.integration.conftest import Stack, register_embedder_copy, start_api

COLLECTION = "kb"


@pytest.fixture(scope="module")
def kb(stack: Stack) -> str:
    files = [
        ("files", (p.name, p.read_bytes()))
        for p in sorted((SAMPLES / "corpus").rglob("*"))
        if p.is_file()
    ]
    r = httpx.post(
        f"{stack.api}/v1/ingest", data={"collection": COLLECTION}, files=files, timeout=600
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["counts"].get("failed", 0) == 0, body
    return COLLECTION


@pytest.fixture(scope="module")
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.api}/v1", api_key="unused", timeout=180)


def question(n: int = 0) -> dict:
    return json.loads((SAMPLES / "questions.json").read_text())[n]  # type: ignore[no-any-return]


def test_health_and_ready(stack: Stack) -> None:
    assert httpx.get(f"{stack.api}/healthz").json() == {"status": "ok"}
    r = httpx.get(f"{stack.api}/readyz", timeout=10)
    assert r.status_code == 200 and r.json()["checks"]["llm"]["ok"] is True


def test_llm_answers_correctly(client: openai.OpenAI) -> None:
    """The served base model must decode correctly (Q4_1 did not; see servable.py)."""
    r = client.chat.completions.create(
        model="smollm2-135m-instruct",
        temperature=0,
        max_tokens=32,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
    )
    assert "paris" in (r.choices[0].message.content or "").lower()


def test_rag_answer_with_citations(client: openai.OpenAI, kb: str) -> None:
    q = question(0)
    r = client.chat.completions.create(
        model=f"rag/{kb}", temperature=0, messages=[{"role": "user", "content": q["question"]}]
    )
    text = r.choices[0].message.content or ""
    sources = r.model_extra["sources"]  # type: ignore[index]
    assert sources and {"source", "chunk_index", "score", "text", "file_name"} <= set(sources[0])
    assert any(s["file_name"] == Path(q["source"]).name for s in sources)
    assert "[" in text and any(f"[{s['index']}]" in text for s in sources), text
    assert all(k.lower() in text.lower() for k in q["must_contain"]), text


def test_rag_streaming(client: openai.OpenAI, kb: str) -> None:
    stream = client.chat.completions.create(
        model=f"rag/{kb}",
        stream=True,
        temperature=0,
        messages=[{"role": "user", "content": question(1)["question"]}],
    )
    chunks = list(stream)
    assert chunks[0].model_extra.get("sources")  # type: ignore[union-attr]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text) > 10
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_passthrough_streaming(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="smollm2-135m-instruct",
        stream=True,
        temperature=0,
        max_tokens=16,
        messages=[{"role": "user", "content": "Say hello."}],
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_retrieve_modes_and_models(stack: Stack, kb: str) -> None:
    q = question(0)
    for mode in ("dense", "bm25", "hybrid"):
        r = httpx.post(
            f"{stack.api}/v1/retrieve",
            timeout=30,
            json={"collection": kb, "query": q["question"], "mode": mode, "top_k": 5},
        )
        assert r.status_code == 200, r.text
        hits = r.json()["hits"]
        assert [h["rank"] for h in hits] == list(range(1, len(hits) + 1))
        assert Path(q["source"]).name in [h["file_name"] for h in hits], (mode, hits)
    ids = [m["id"] for m in httpx.get(f"{stack.api}/v1/models").json()["data"]]
    assert f"rag/{kb}" in ids and "smollm2-135m-instruct" in ids and "all-minilm-l6-v2" in ids


def test_chinese_question_finds_chinese_document(stack: Stack, kb: str) -> None:
    zh = next(q for q in json.loads((SAMPLES / "questions.json").read_text()) if q["lang"] == "zh")
    for mode in ("bm25", "hybrid"):
        r = httpx.post(
            f"{stack.api}/v1/retrieve",
            timeout=30,
            json={"collection": kb, "query": zh["question"], "mode": mode, "top_k": 5},
        )
        assert Path(zh["source"]).name in [h["file_name"] for h in r.json()["hits"]], mode


def test_embeddings_endpoint(client: openai.OpenAI) -> None:
    r = client.embeddings.create(model="all-minilm-l6-v2", input=["hello", "world"])
    assert len(r.data) == 2 and len(r.data[0].embedding) == 384


def test_upload_path_traversal_is_contained(stack: Stack) -> None:
    evil = ["../../../evil.md", "..\\..\\evil2.md", "/etc/evil3.md"]
    files = [("files", (n, b"Traversal attempt text.")) for n in evil]
    r = httpx.post(
        f"{stack.api}/v1/ingest", data={"collection": "uploads"}, files=files, timeout=120
    )
    assert r.status_code == 200, r.text
    assert sorted(f["path"] for f in r.json()["files"]) == ["evil.md", "evil2.md", "evil3.md"]
    uploads = stack.home / "uploads" / "uploads"
    assert sorted(p.name for p in uploads.iterdir()) == ["evil.md", "evil2.md", "evil3.md"]
    assert not (stack.home / "evil.md").exists() and not (stack.home.parent / "evil.md").exists()


def test_bad_requests_are_clear(stack: Stack, kb: str) -> None:
    r = httpx.post(f"{stack.api}/v1/retrieve", json={"collection": "nope", "query": "x"})
    assert r.status_code == 404 and "tunestack ingest" in r.json()["hint"]
    r = httpx.post(
        f"{stack.api}/v1/retrieve", json={"collection": kb, "query": "x", "mode": "magic"}
    )
    assert r.status_code == 422 and r.json()["details"][0]["field"].endswith("mode")
    r = httpx.post(
        f"{stack.api}/v1/retrieve",
        json={"collection": kb, "query": "x", "embedder": "missing-embedder"},
    )
    assert r.status_code == 404 and "all-minilm-l6-v2" in r.json()["hint"]


def test_other_embedder_is_refused_then_reindex(stack: Stack, kb: str) -> None:
    """A collection built with embedder A cannot be queried with B until reindexed."""
    register_embedder_copy(stack, "minilm-copy")
    body = {"collection": kb, "query": "warranty", "embedder": "minilm-copy"}
    r = httpx.post(f"{stack.api}/v1/retrieve", json=body, timeout=30)
    assert r.status_code == 409
    msg = r.json()["message"] + r.json()["hint"]
    assert "all-minilm-l6-v2" in msg and "minilm-copy" in msg
    assert f"tunestack reindex {kb} --embedder minilm-copy" in msg

    r = httpx.post(
        f"{stack.api}/v1/collections/{kb}/reindex", json={"embedder": "minilm-copy"}, timeout=300
    )
    assert r.status_code == 200, r.text
    r = httpx.post(f"{stack.api}/v1/retrieve", json=body, timeout=30)
    assert r.status_code == 200 and r.json()["embedder"] == "minilm-copy"
    cols = httpx.get(f"{stack.api}/v1/collections").json()["collections"]
    builds = next(c["builds"] for c in cols if c["name"] == kb)
    assert {b["embedder"] for b in builds} == {"all-minilm-l6-v2", "minilm-copy"}
    assert len({b["chunks"] for b in builds}) == 1


@pytest.fixture(scope="module")
def strict_api(stack: Stack) -> Iterator[str]:
    """An API with a key, a 1 MB upload limit and a dead LLM."""
    port = free_port()
    proc = start_api(
        stack,
        port,
        TUNESTACK_API_KEY="s3cret-key-0123456789",
        TUNESTACK_RAG_MAX_UPLOAD_MB="1",
        TUNESTACK_RAG_LLM_BASE_URL=f"http://127.0.0.1:{free_port()}/v1",
    )
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def test_auth(strict_api: str, kb: str) -> None:
    body = {"collection": kb, "query": "warranty"}
    assert httpx.get(f"{strict_api}/healthz").status_code == 200
    assert httpx.post(f"{strict_api}/v1/retrieve", json=body).status_code == 401
    bad = {"Authorization": "Bearer wrong"}
    assert httpx.post(f"{strict_api}/v1/retrieve", json=body, headers=bad).status_code == 401
    ok = {"Authorization": "Bearer s3cret-key-0123456789"}
    assert (
        httpx.post(f"{strict_api}/v1/retrieve", json=body, headers=ok, timeout=30).status_code
        == 200
    )
    assert httpx.get(f"{strict_api}/v1/models").status_code == 401


def test_llm_down_is_503_naming_llm(strict_api: str, kb: str) -> None:
    c = openai.OpenAI(base_url=f"{strict_api}/v1", api_key="s3cret-key-0123456789", max_retries=0)
    for model, stream in (
        (f"rag/{kb}", False),
        (f"rag/{kb}", True),
        ("smollm2-135m-instruct", False),
    ):
        with pytest.raises(openai.APIStatusError) as e:
            c.chat.completions.create(
                model=model, stream=stream, messages=[{"role": "user", "content": "warranty?"}]
            )
        assert e.value.status_code == 503
        body = e.value.response.json()
        assert body["service"] == "llm" and "tunestack up" in body["hint"]
    r = httpx.get(f"{strict_api}/readyz", headers={"Authorization": "Bearer s3cret-key-0123456789"})
    assert r.status_code == 503 and r.json()["checks"]["llm"]["ok"] is False


def test_upload_size_limit(strict_api: str) -> None:
    files = [("files", ("big.txt", b"word " * (2**20)))]
    r = httpx.post(
        f"{strict_api}/v1/ingest",
        data={"collection": "big"},
        files=files,
        headers={"Authorization": "Bearer s3cret-key-0123456789"},
        timeout=60,
    )
    assert r.status_code == 413 and "MB" in r.json()["message"]


def test_chroma_down_is_503_naming_chroma(stack: Stack) -> None:
    port = free_port()
    proc = start_api(stack, port, TUNESTACK_CHROMA_URL=f"http://127.0.0.1:{free_port()}")
    try:
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/retrieve",
            json={"collection": "kb", "query": "x"},
            timeout=30,
        )
        assert r.status_code == 503, r.text
        assert r.json()["service"] == "chroma" and "tunestack up" in r.json()["hint"]
        assert "Traceback" not in r.text
    finally:
        proc.terminate()
        proc.wait(10)


def test_queued_ingest_in_local_mode(stack: Stack) -> None:
    """POST /v1/jobs/ingest: the files are saved at once, the API's own job thread ingests
    them (a queue worker does with TUNESTACK_QUEUE_URL: tests/integration/test_job_queue.py)
    and the result is /v1/ingest's report; the request's mistakes are refused up front."""
    doc = ("files", ("lumen-faq.md", b"# Lumen FAQ\n\nThe Lumen X2 charges in 90 minutes.\n"))
    r = httpx.post(
        f"{stack.api}/v1/jobs/ingest", data={"collection": "queued-local"}, files=[doc], timeout=60
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert r.json()["params"]["files"] == ["lumen-faq.md"] and "staged" not in r.text
    deadline = time.monotonic() + 120
    while (info := httpx.get(f"{stack.api}/v1/jobs/{job_id}", timeout=10).json())["status"] in (
        "queued",
        "running",
    ):
        assert time.monotonic() < deadline, info
        time.sleep(0.2)
    assert info["status"] == "done", info
    result = info["result"]
    assert result["counts"]["ok"] == 1 and result["files"][0]["path"] == "lumen-faq.md"
    hits = httpx.post(
        f"{stack.api}/v1/retrieve",
        json={"collection": "queued-local", "query": "How long does the X2 take to charge?"},
        timeout=60,
    ).json()["hits"]
    assert "90 minutes" in hits[0]["text"]
    bad = httpx.post(
        f"{stack.api}/v1/jobs/ingest",
        data={"collection": "queued-local", "chunk_size": "64", "chunk_overlap": "64"},
        files=[doc],
        timeout=60,
    )
    assert bad.status_code == 422 and "chunk_overlap" in bad.json()["message"]
    assert not list((stack.home / "uploads" / ".incoming").glob("*/*"))  # nothing left staged
