"""The relevance gate on the session stack (real Chroma, uvicorn): `tunestack rag calibrate`
stores a build's threshold from answerable questions; an API whose LLM is down then
answers an off-topic question "not in the documents" (the gate needs no LLM, streamed or
not) and an on-topic one with the LLM's 503, which proves the gate let it through;
`--off` and `min_relevance: 0` turn it off. No answer is generated, so this is fast."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from platform_cli.main import app
from services.common.rag_prompt import ABSTENTION
from tests.conftest import free_port, shared_data
from tests.integration.conftest import Stack, start_api, stop_api

COLLECTION = "gate-xquad"


@pytest.fixture(scope="module")
def article(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """XQuAD-en's first article (5 paragraphs, 74 questions) ingested; its questions as a
    SQuAD file for calibration; one question of another article (off topic)."""
    data = json.loads(shared_data("xquad", "xquad.en.json").read_text(encoding="utf-8"))
    art = data["data"][0]
    files = [
        ("files", (f"p{i}.txt", p["context"].encode())) for i, p in enumerate(art["paragraphs"])
    ]
    r = httpx.post(
        f"{stack.api}/v1/ingest", data={"collection": COLLECTION}, files=files, timeout=300
    )
    assert r.status_code == 200, r.text
    path = tmp_path_factory.mktemp("gate") / "questions.json"
    path.write_text(json.dumps({"version": "1.1", "data": [art]}), encoding="utf-8")
    return {
        "dataset": path,
        "on_topic": art["paragraphs"][0]["qas"][0]["question"],
        "off_topic": data["data"][20]["paragraphs"][0]["qas"][0]["question"],
    }


@pytest.fixture(scope="module")
def no_llm_api(stack: Stack) -> Iterator[str]:
    """An API on the stack's Chroma whose LLM server is a dead port."""
    port = free_port()
    proc = start_api(stack, port, TUNESTACK_RAG_LLM_BASE_URL=f"http://127.0.0.1:{free_port()}/v1")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_api(proc)


def cli(stack: Stack, *args: str) -> Any:
    env = {k: v for k, v in stack.env().items() if k.startswith(("TUNESTACK_", "HF_"))}
    return CliRunner().invoke(app, ["rag", "calibrate", "-c", COLLECTION, *args], env=env)


def ask(api: str, question: str, **extra: Any) -> httpx.Response:
    body = {"model": f"rag/{COLLECTION}", "messages": [{"role": "user", "content": question}]}
    return httpx.post(f"{api}/v1/chat/completions", json={**body, **extra}, timeout=60)


def retrieve(api: str, question: str) -> dict[str, Any]:
    r = httpx.post(
        f"{api}/v1/retrieve",
        json={"collection": COLLECTION, "query": question, "top_k": 1},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_calibrated_gate_abstains_without_the_llm(
    stack: Stack, article: dict[str, Any], no_llm_api: str
) -> None:
    r = cli(stack, "--dataset", str(article["dataset"]), "--json")
    assert r.exit_code == 0, r.output
    cal = json.loads(r.stdout)
    assert cal["questions"] == 74 and cal["skipped"] == 0
    assert 0.0 < cal["min_relevance"] < cal["best_similarity"]["p50"] < 1.0
    assert cal["false_abstention"] <= 0.05

    off, on = retrieve(stack.api, article["off_topic"]), retrieve(stack.api, article["on_topic"])
    assert off["min_relevance"] == pytest.approx(cal["min_relevance"])
    assert off["best_dense"] < cal["min_relevance"] <= on["best_dense"]

    # the LLM is down: the gate's answer arrives anyway, with no token generated
    r = ask(no_llm_api, article["off_topic"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["message"]["content"] == ABSTENTION
    assert body["usage"]["completion_tokens"] == 0
    with httpx.stream(
        "POST",
        f"{no_llm_api}/v1/chat/completions",
        json={
            "model": f"rag/{COLLECTION}",
            "messages": [{"role": "user", "content": article["off_topic"]}],
            "stream": True,
        },
        timeout=60,
    ) as s:
        assert s.status_code == 200
        text = "".join(
            (json.loads(line[6:])["choices"] or [{}])[0].get("delta", {}).get("content") or ""
            for line in s.iter_lines()
            if line.startswith("data: {")
        )
    assert text == ABSTENTION
    # a question the documents answer goes to the LLM (down: 503 naming it)
    r = ask(no_llm_api, article["on_topic"])
    assert r.status_code == 503 and r.json()["service"] == "llm", r.text
    # per request, 0 turns the gate off
    assert ask(no_llm_api, article["off_topic"], min_relevance=0).status_code == 503


def test_the_api_calibrates_the_same_and_turns_the_gate_off(
    stack: Stack, article: dict[str, Any]
) -> None:
    registered = stack.home / "datasets" / "gate" / "questions.json"
    registered.parent.mkdir(parents=True, exist_ok=True)
    registered.write_bytes(article["dataset"].read_bytes())
    url = f"{stack.api}/v1/collections/{COLLECTION}/relevance"
    r = httpx.post(url, json={"dataset": "gate/questions.json"}, timeout=120)
    assert r.status_code == 200, r.text
    cal = r.json()
    assert cal["questions"] == 74 and cal["embedder"] == "all-minilm-l6-v2"
    got = retrieve(stack.api, article["off_topic"])["min_relevance"]
    assert got == pytest.approx(cal["min_relevance"])
    # refused: no dataset and no off, a dataset outside TUNESTACK_HOME/datasets, a share
    assert httpx.post(url, json={}, timeout=30).status_code == 422
    r = httpx.post(url, json={"dataset": "../../etc/passwd.json"}, timeout=30)
    assert r.status_code == 404 and str(stack.home) not in r.text
    assert (
        httpx.post(url, json={"off": True, "false_abstention": 0.9}, timeout=30).status_code == 422
    )
    r = httpx.post(url, json={"off": True}, timeout=30)
    assert r.status_code == 200 and r.json()["min_relevance"] is None, r.text
    assert retrieve(stack.api, article["off_topic"])["min_relevance"] is None


def test_gate_off_and_bad_calibrations(
    stack: Stack, article: dict[str, Any], no_llm_api: str, tmp_path: Path
) -> None:
    r = cli(stack, "--off")
    assert r.exit_code == 0, r.output
    assert "gate off" in r.stdout
    assert retrieve(stack.api, article["off_topic"])["min_relevance"] is None
    assert ask(no_llm_api, article["off_topic"]).status_code == 503
    # too few questions to read a 5% quantile from: refused, nothing stored
    few = tmp_path / "few.jsonl"
    few.write_text(
        "".join(json.dumps({"question": f"q{i}?", "answer": "a"}) + "\n" for i in range(5))
    )
    r = cli(stack, "--dataset", str(few))
    assert r.exit_code == 1
    assert "needs at least 20" in " ".join(r.stderr.split()), r.stderr
    assert retrieve(stack.api, article["off_topic"])["min_relevance"] is None
    assert cli(stack).exit_code == 2  # neither --dataset nor --off
    r = cli(stack, "--dataset", str(article["dataset"]), "--false-abstention", "0.7")
    assert r.exit_code == 1 and "--false-abstention" in r.stderr
