"""`tunestack rag eval` and POST /v1/jobs/rag-eval on the session stack (real Chroma, the
llama.cpp server with the bundled model, the API under uvicorn), on a few XQuAD-en
questions: the CLI's report folder, the API job and its report files, a dead LLM (503
naming it), and inputs refused before anything runs (unknown formats and the metrics
themselves: tests/unit/test_rag_eval_*.py). One answer in `make test` (the API job; the UI
tab's test asks one more); the CLI's own run is `slow` (make test-slow)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from platform_cli.main import app
from tests.conftest import free_port, shared_data
from tests.integration.conftest import Stack
from tests.integration.ui_fixtures import DegradedApi

COLLECTION = "xquad-rag"
DATASET = "rag/xquad-en-small.json"


@pytest.fixture(scope="module")
def xquad(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first article's first three XQuAD-en paragraphs ingested; a SQuAD file with one
    question on each of them and one on the fourth paragraph, which is not ingested
    (registered as a dataset too)."""
    data = json.loads(shared_data("xquad", "xquad.en.json").read_text(encoding="utf-8"))
    paras = data["data"][0]["paragraphs"][:4]
    folder = tmp_path_factory.mktemp("xquad-docs")
    files = []
    for i, p in enumerate(paras[:3]):
        (folder / f"p{i}.txt").write_text(p["context"], encoding="utf-8")
        files.append(("files", (f"p{i}.txt", p["context"].encode())))
    r = httpx.post(
        f"{stack.api}/v1/ingest", data={"collection": COLLECTION}, files=files, timeout=300
    )
    assert r.status_code == 200, r.text
    small = {
        "version": "1.1",
        "data": [{"title": "xquad", "paragraphs": [{**p, "qas": p["qas"][:1]} for p in paras]}],
    }
    path = stack.home / "datasets" / DATASET
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(small), encoding="utf-8")
    return path


def wait(api: str, job: dict[str, Any], timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while job["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
        job = httpx.get(f"{api}/v1/jobs/{job['id']}", timeout=10).json()
    return job


@pytest.mark.slow  # a CLI process (seconds of imports, its own embedder) + 2 answers: 45-60 s
def test_cli_answers_scores_and_writes_the_report(stack: Stack, xquad: Path) -> None:
    # 1 answerable question + 1 whose paragraph is not in the collection
    r = stack.cli(
        "rag", "eval", "--dataset", str(xquad), "-c", COLLECTION,
        "--limit", "1", "--unanswerable", "1", "--top-k", "2", "--max-tokens", "32", "--json",
        timeout=600, env={**stack.env(), "TUNESTACK_RAG_LLM_TIMEOUT_S": "300"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["counts"] == {
        "selected": 1,
        "gold_missing": 0,
        "marked_unanswerable": 0,
        "added_unanswerable": 1,
    }
    (row,) = out["grid"]
    assert (row["llm"], row["embedder"], row["mode"]) == (
        "smollm2-135m-instruct",
        "all-minilm-l6-v2",
        "dense",
    )
    assert row["questions"] == 2 and row["answerable"] == 1 and row["unanswerable"] == 1
    assert row["hit@2"] == 1.0  # its paragraph is among the 2 chunks retrieved
    for k in ("f1", "em", "rouge_l", "mrr@2", "false_abstention", "abstention"):
        assert 0.0 <= row[k] <= 1.0, (k, row)
    assert row["latency_p50_s"] > 0 and row["tokens_per_s"] > 0
    folder = Path(out["report"])
    assert folder.parent == stack.home / "reports" and folder.name.startswith("rag-eval-")
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["f1_heatmap.png", "questions.jsonl", "report.json", "report.md"]
    rows = [json.loads(line) for line in (folder / "questions.jsonl").read_text().splitlines()]
    assert [r["role"] for r in rows] == ["selected", "added-unanswerable"]
    assert rows[0]["answers"] and rows[0]["answer"] and len(rows[0]["retrieved"]) == 2
    assert rows[1]["gold_in_collection"] is False and not rows[1]["answerable"]
    assert all(0 < r["completion_tokens"] <= 32 for r in rows), rows  # --max-tokens reached it
    assert (
        "| smollm2-135m-instruct | all-minilm-l6-v2 | dense | 2 |"
        in (folder / "report.md").read_text()
    )


def test_api_job_writes_a_report_the_admin_endpoints_serve(stack: Stack, xquad: Path) -> None:
    r = httpx.post(
        f"{stack.api}/v1/jobs/rag-eval",
        json={
            "dataset": DATASET,
            "collection": COLLECTION,
            "limit": 1,
            "top_k": 2,
            "max_tokens": 32,
            "modes": ["bm25"],
        },
        timeout=30,
    )
    assert r.status_code == 202, r.text
    job = wait(stack.api, r.json())
    assert job["status"] == "done", job
    assert job["kind"] == "rag-eval" and job["result"]["grid"][0]["mode"] == "bm25"
    name = job["result"]["report"]
    rep = httpx.get(f"{stack.api}/v1/reports/{name}", timeout=10).json()
    assert rep["kind"] == "rag-eval" and rep["report"]["dataset"] == DATASET
    files = {f["name"]: f["url"] for f in rep["files"]}
    assert {"f1_heatmap.png", "questions.jsonl", "report.json", "report.md"} <= set(files)
    png = httpx.get(f"{stack.api}{files['f1_heatmap.png']}", timeout=10)
    assert png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"
    lines = httpx.get(f"{stack.api}{files['questions.jsonl']}", timeout=10).text.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["mode"] == "bm25"
    listed = httpx.get(f"{stack.api}/v1/reports", timeout=10).json()["reports"]
    assert next(x for x in listed if x["name"] == name)["kind"] == "rag-eval"
    for body in (job, rep):  # no server paths in what the API answers
        assert str(stack.home) not in json.dumps(body)


def test_bad_requests_are_refused_before_a_job_is_queued(stack: Stack, xquad: Path) -> None:
    url = f"{stack.api}/v1/jobs/rag-eval"
    ok = {"dataset": DATASET, "collection": COLLECTION}
    cases = [
        ({**ok, "dataset": "../../etc/passwd.json"}, 404, "No dataset named"),
        ({**ok, "dataset": "missing.jsonl"}, 404, "No dataset named"),
        ({**ok, "llms": ["no-such-model"]}, 404, "smollm2-135m-instruct"),
        ({**ok, "collection": "nope"}, 404, "does not exist"),
        ({**ok, "embedders": ["not-registered"]}, 404, "Not registered"),
        ({**ok, "modes": ["sparse"]}, 422, ""),
        # a name is looked up on the configured servers, never taken for a URL
        ({**ok, "llms": ["http://evil.example/v1"]}, 404, "No configured LLM server"),
        ({**ok, "llms": ["<script>"]}, 422, ""),
    ]
    before = len(httpx.get(f"{stack.api}/v1/jobs", timeout=10).json()["jobs"])
    for body, code, says in cases:
        r = httpx.post(url, json=body, timeout=30)
        assert r.status_code == code, (body, r.text)
        assert says in r.text and str(stack.home) not in r.text, r.text
    assert len(httpx.get(f"{stack.api}/v1/jobs", timeout=10).json()["jobs"]) == before


def test_a_dead_llm_is_a_503_naming_it(
    stack: Stack, xquad: Path, degraded_api: DegradedApi
) -> None:
    r = httpx.post(
        f"{degraded_api.url}/v1/jobs/rag-eval",
        json={"dataset": DATASET, "collection": COLLECTION},
        headers={"Authorization": f"Bearer {degraded_api.key}"},
        timeout=30,
    )
    assert r.status_code == 503, r.text
    assert r.json()["service"] == "llm" and "smollm2-135m-instruct" in r.json()["message"]
    # the CLI, in this process (a subprocess costs seconds of imports): the same 503
    dead = f"http://127.0.0.1:{free_port()}/v1"
    env = {**stack.env(), "TUNESTACK_RAG_LLM_BASE_URL": dead}
    env = {k: v for k, v in env.items() if k.startswith(("TUNESTACK_", "HF_", "OLLAMA"))}
    cli = CliRunner().invoke(
        app, ["rag", "eval", "--dataset", str(xquad), "-c", COLLECTION], env=env
    )
    assert cli.exit_code == 1, cli.output
    err = " ".join(cli.stderr.split())
    assert "LLM 'smollm2-135m-instruct'" in err and dead in err, err
    assert cli.exception is None or isinstance(cli.exception, SystemExit)


def test_jsonl_datasets_upload_checked_by_the_rag_eval_loader(stack: Stack) -> None:
    rows = [
        {"question": "How much is the LO-200?", "answer": "49 EUR", "source": "catalog.md"},
        {"question": "Who founded it?", "answer": ["two engineers"], "source": "about.md"},
    ]
    body = "".join(json.dumps(r) + "\n" for r in rows).encode()
    r = httpx.post(f"{stack.api}/v1/datasets", files={"file": ("rag-qs.jsonl", body)}, timeout=30)
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "uploads/rag-qs.jsonl" and r.json()["queries"] == 2
    listed = httpx.get(f"{stack.api}/v1/datasets", timeout=10).json()["datasets"]
    assert "uploads/rag-qs.jsonl" in [d["name"] for d in listed]
    bad = b'{"question": "ok"}\n{"answer": "no question"}\n'
    r = httpx.post(f"{stack.api}/v1/datasets", files={"file": ("bad.jsonl", bad)}, timeout=30)
    assert r.status_code == 422 and "bad.jsonl, line 2" in r.json()["message"], r.text
    assert str(stack.home) not in r.text
