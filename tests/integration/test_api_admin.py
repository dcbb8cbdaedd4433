"""The admin endpoints the UI uses: registry, artifacts, reports, datasets, jobs, deploy.

Against the session stack (real Chroma, uvicorn); `ui_data` has a tuned embedder (a real
`embed tune` run), an LLM run with a loss curve exported in four GGUF types (the converter
tests' run) and a QA dataset under TUNESTACK_HOME. What the API shows is checked against
the registry's typed records, which the tuner, the trainer and the converter wrote.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx

from tests.conftest import SAMPLES
from tests.integration.conftest import Stack
from tests.integration.converter_fixtures import QUANTS
from tests.integration.ui_fixtures import DegradedApi, UiData, ingest, wait_job


def get(stack: Stack, path: str, **kw: object) -> httpx.Response:
    return httpx.get(f"{stack.api}{path}", timeout=30, **kw)  # type: ignore[arg-type]


def test_registry_lists_models_with_metrics_files_and_exports(
    stack: Stack, ui_data: UiData
) -> None:
    body = get(stack, "/v1/registry/models").json()
    assert body["serving"]["llm_model"] == "smollm2-135m-instruct"
    assert body["serving"]["deploy_available"] is True  # to Ollama, as a job
    assert "--to llamacpp" in body["serving"]["deploy_hint"]
    assert body["serving"]["ollama_host"].startswith("http")
    by_name = {m["name"]: m for m in body["models"]}
    record = stack.registry.llm(ui_data.llm_run).record
    export = record.export
    assert export is not None and export.ok and export.quants == list(QUANTS)
    run = by_name[ui_data.llm_run]
    assert run["kind"] == "llm" and run["base_model"] == "smollm2-135m-instruct"
    assert run["metrics"] == record.metrics and not run["deployed"]
    assert run["metrics"]["train"]["global_step"] == 6 and run["metrics"]["eval"]["eval_loss"]
    files = {f["name"] for f in run["files"]}
    assert {"training_loss.png", "training_eval_loss.png", "trainer_log.jsonl"} <= files
    assert {"all_results.json", "Modelfile"} <= files and "adapter_config.json" not in files
    # one row per exported type, as meta.json records it: file, size, parity, stop check
    assert [e["name"] for e in run["exports"]] == list(QUANTS)
    for row in run["exports"]:
        f = export.files[row["name"]]
        stops = f.stop_check
        assert (row["file"], row["size"], row["parity"], row["ok"]) == (
            Path(f.path).name,
            f.size,
            f.parity.top1_agreement,
            True,
        )
        assert row["stopped"] == f"{stops.stopped}/{stops.prompts}" and stops.prompts == 6
        assert f.size == Path(f.path).stat().st_size and len(f.sha256) == 64
    sizes = {e["name"]: e["size"] for e in run["exports"]}
    assert sizes["q4_k_m"] < sizes["q5_k_m"] < sizes["q8_0"] < sizes["f16"], sizes
    for row in run["parity"]:
        par = export.files[row["name"]].parity
        assert row["top1_agreement"] == par.top1_agreement >= par.threshold == row["threshold"]
        assert row["tokenizer_match"] == "6/6" and row["ok"]
    base_llm = by_name["smollm2-135m-instruct"]
    assert base_llm["deployed"] and base_llm["exports"] and not base_llm["files"]
    tuned_rec = stack.registry.embedder(ui_data.tuned).record
    tuned = by_name[ui_data.tuned]
    assert tuned["kind"] == "embedder" and tuned["base_model"] == "all-minilm-l6-v2"
    assert tuned_rec.source == "tunestack embed tune"
    assert ui_data.collection in tuned["collections"]
    assert tuned["fingerprint"] == tuned_rec.fingerprint
    assert tuned_rec.fingerprint != by_name["all-minilm-l6-v2"]["fingerprint"]
    mrr = tuned["metrics"]["validation"]["cosine_mrr@10"]
    assert mrr == tuned_rec.metrics["validation"]["cosine_mrr@10"] and 0 < mrr <= 1
    assert tuned["metrics"] == tuned_rec.metrics
    assert by_name["all-minilm-l6-v2"]["deployed"]  # the default embedder

    only = get(stack, "/v1/registry/models", params={"kind": "embedder"}).json()["models"]
    assert {m["kind"] for m in only} == {"embedder"}
    detail = get(stack, f"/v1/registry/models/llm/{ui_data.llm_run}").json()
    assert detail["meta"]["finetuning_type"] == "lora"
    r = get(stack, "/v1/registry/models/llm/nope")
    assert r.status_code == 404 and ui_data.llm_run in r.json()["hint"]


def test_artifacts_are_served_and_nothing_else(stack: Stack, ui_data: UiData) -> None:
    base = f"/v1/registry/models/llm/{ui_data.llm_run}/files"
    r = get(stack, f"{base}/training_loss.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content.startswith(b"\x89PNG")
    log = get(stack, f"{base}/trainer_log.jsonl")
    assert log.status_code == 200
    lines = [json.loads(x) for x in log.text.splitlines()]
    assert lines[0]["current_steps"] == 1 and lines[0]["total_steps"] == 6 and lines[0]["loss"]
    assert lines[-1]["percentage"] == 100  # LLaMA-Factory's shape: the run's last line
    assert any("eval_loss" in x for x in lines)

    # a symlink with an artifact-like name that leads outside the entry is refused
    adapter = Path(str(stack.registry.llm(ui_data.llm_run).record.adapter_path))
    trap = adapter / "leak_results.json"
    trap.unlink(missing_ok=True)
    os.symlink("/etc/passwd", trap)
    try:
        assert get(stack, f"{base}/leak_results.json").status_code == 404
        assert "leak_results.json" not in {
            f["name"]
            for f in get(stack, f"/v1/registry/models/llm/{ui_data.llm_run}").json()["files"]
        }
    finally:
        trap.unlink()
    for bad in (
        "meta.json",  # not an artifact name
        "adapter_config.json",
        "..%2Fmeta.json",
        "..%2F..%2F..%2Fchroma%2Fchroma.sqlite3",
        "%2Fetc%2Fpasswd",
        ".training_loss.png",
    ):
        r = get(stack, f"{base}/{bad}")
        assert r.status_code in (404, 422), (bad, r.status_code)
        assert "root:" not in r.text and "Traceback" not in r.text
    assert get(stack, "/v1/registry/models/llm/..%2F..%2Fembedders/files/x.png").status_code in (
        404,
        422,
    )
    assert get(stack, "/v1/registry/models/other/x").status_code == 422


def test_eval_job_writes_a_report_that_is_listed_and_served(stack: Stack, ui_data: UiData) -> None:
    names = [d["name"] for d in get(stack, "/v1/datasets").json()["datasets"]]
    assert ui_data.dataset in names
    body = {"dataset": ui_data.dataset, "models": ["all-minilm-l6-v2", ui_data.tuned]}
    r = httpx.post(f"{stack.api}/v1/jobs/eval", json=body, timeout=30)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["kind"] == "eval" and job["status"] in ("queued", "running")
    seen: list[tuple[int, int]] = []
    while job["status"] in ("queued", "running"):
        seen.append((job["done"], job["total"]))
        time.sleep(0.2)
        job = get(stack, f"/v1/jobs/{job['id']}").json()
    assert job["status"] == "done", job
    assert job["progress"] == 1.0 and job["finished"] >= job["started"]
    # progress counts encoded texts: monotonic, within the total
    assert all(d <= t or t == 0 for d, t in seen) and seen == sorted(seen)
    result = job["result"]
    assert set(result["models"]) == {"all-minilm-l6-v2", ui_data.tuned}
    assert 0 <= result["models"][ui_data.tuned]["mrr@10"] <= 1
    assert ui_data.tuned in result["error_reduction"]

    reports = get(stack, "/v1/reports").json()["reports"]
    assert reports[0]["name"] == result["report"]
    assert {f["name"] for f in reports[0]["files"]} == {"metrics.png", "report.json", "report.md"}
    rep = get(stack, f"/v1/reports/{result['report']}").json()
    assert rep["report"]["top_k"] == 10 and "| model |" in rep["markdown"]
    png = get(stack, f"/v1/reports/{result['report']}/files/metrics.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert get(stack, f"/v1/reports/{result['report']}/files/..%2F..%2Fx").status_code == 404
    assert get(stack, "/v1/reports/..%2Fmodels").status_code == 404
    assert any(j["id"] == job["id"] for j in get(stack, "/v1/jobs").json()["jobs"])


def test_job_inputs_are_checked_before_queueing(stack: Stack, ui_data: UiData) -> None:
    post = lambda path, body: httpx.post(f"{stack.api}{path}", json=body, timeout=30)  # noqa: E731
    r = post("/v1/jobs/eval", {"dataset": "missing.json", "models": ["all-minilm-l6-v2"]})
    assert r.status_code == 404 and ui_data.dataset in r.json()["hint"]
    r = post("/v1/jobs/eval", {"dataset": "../../etc/passwd", "models": ["all-minilm-l6-v2"]})
    assert r.status_code == 404
    r = post("/v1/jobs/eval", {"dataset": ui_data.dataset, "models": ["no-such-model"]})
    assert r.status_code == 404 and "all-minilm-l6-v2" in r.json()["hint"]
    r = post("/v1/jobs/eval", {"dataset": ui_data.dataset, "models": []})
    assert r.status_code == 422
    r = post("/v1/jobs/reindex", {"collection": "no-such-collection", "embedder": ui_data.tuned})
    assert r.status_code == 404
    r = post("/v1/jobs/reindex", {"collection": "bad/name", "embedder": ui_data.tuned})
    assert r.status_code == 422
    assert get(stack, "/v1/jobs/000000000000").status_code == 404


def test_reindex_job_reports_progress_and_dedupes(stack: Stack, ui_data: UiData) -> None:
    ingest(stack.api, "ui-jobs", [SAMPLES / "corpus" / "product_faq.md"])
    body = {"collection": "ui-jobs", "embedder": ui_data.tuned}
    first = httpx.post(f"{stack.api}/v1/jobs/reindex", json=body, timeout=30).json()
    second = httpx.post(f"{stack.api}/v1/jobs/reindex", json=body, timeout=30).json()
    assert second["id"] == first["id"]  # a double click is one job
    done = wait_job(stack.api, first)
    assert done["status"] == "done" and done["result"]["chunks"] == done["total"] > 0
    cols = get(stack, "/v1/collections").json()["collections"]
    builds = next(c["builds"] for c in cols if c["name"] == "ui-jobs")
    assert {b["embedder"] for b in builds} == {"all-minilm-l6-v2", ui_data.tuned}
    httpx.delete(f"{stack.api}/v1/collections/ui-jobs", timeout=30)


def test_dataset_upload_validates(stack: Stack, tmp_path: Path) -> None:
    qa = {
        "queries": {"q1": "How long is the warranty?"},
        "corpus": {"d1": "The warranty lasts two years.", "d2": "Shipping is free."},
        "relevant_docs": {"q1": ["d1"]},
    }
    up = lambda name, data: httpx.post(  # noqa: E731
        f"{stack.api}/v1/datasets", files={"file": (name, data)}, timeout=30
    )
    r = up("../../escape.json", json.dumps(qa).encode())
    assert r.status_code == 201, r.text
    assert r.json() == {**r.json(), "name": "uploads/escape.json", "queries": 1, "corpus": 2}
    assert (stack.home / "datasets" / "uploads" / "escape.json").is_file()
    assert not (stack.home.parent / "escape.json").exists()
    assert "uploads/escape.json" in [
        d["name"] for d in get(stack, "/v1/datasets").json()["datasets"]
    ]

    bad = {**qa, "relevant_docs": {"q1": ["d9"]}}
    r = up("bad.json", json.dumps(bad).encode())
    assert r.status_code == 422 and "d9" in r.json()["message"]
    assert "bad.json" in r.json()["message"] and ".incoming" not in r.json()["message"]
    assert not (stack.home / "datasets" / "uploads" / "bad.json").exists()
    r = up("broken.json", b"{not json")
    assert r.status_code == 422 and "line 1" in r.json()["message"]
    assert up("notes.txt", b"hello").status_code == 422


def test_deploy_inputs_are_checked_before_queueing(stack: Stack, ui_data: UiData) -> None:
    """The refusals; the deploy job itself is in test_converter.py (a real export)."""
    url = f"{stack.api}/v1/registry/models/llm/{ui_data.llm_run}/deploy"
    jobs_before = len(get(stack, "/v1/jobs").json()["jobs"])
    r = httpx.post(url, json={"to": "llamacpp", "quant": "Q8_0"}, timeout=30)
    assert r.status_code == 409, r.text
    assert r.json()["error"] == "Conflict"
    assert r.json()["hint"] == f"tunestack llm deploy {ui_data.llm_run} --to llamacpp --quant q8_0"
    r = httpx.post(url, json={"quant": "q6_k"}, timeout=30)  # not one of the exported types
    assert r.status_code == 404, r.text
    assert f"has no q6_k export (exported: {', '.join(QUANTS)})" in r.json()["message"]
    assert r.json()["hint"].startswith(f"tunestack llm export {ui_data.llm_run} --quant q6_k")
    base = f"{stack.api}/v1/registry/models/llm/smollm2-135m-instruct/deploy"
    r = httpx.post(base, timeout=30)  # no body: to=ollama, quant=q8_0; never exported
    assert r.status_code == 404, r.text
    assert "has not been exported" in r.json()["message"]
    assert r.json()["hint"] == "tunestack llm export smollm2-135m-instruct --quant q8_0"
    for bad in ({"to": "vllm"}, {"quant": "../x"}, {"name": "../../etc"}, {"name": ""}):
        r = httpx.post(url, json=bad, timeout=30)
        assert r.status_code == 422, (bad, r.text)
    r = httpx.post(f"{stack.api}/v1/registry/models/llm/nope/deploy", timeout=30)
    assert r.status_code == 404
    assert len(get(stack, "/v1/jobs").json()["jobs"]) == jobs_before  # nothing was queued


def test_new_endpoints_need_the_key(degraded_api: DegradedApi, ui_data: UiData) -> None:
    api = degraded_api.url
    paths = [
        ("GET", "/v1/registry/models"),
        ("GET", f"/v1/registry/models/llm/{ui_data.llm_run}"),
        ("GET", f"/v1/registry/models/llm/{ui_data.llm_run}/files/training_loss.png"),
        ("POST", f"/v1/registry/models/llm/{ui_data.llm_run}/deploy"),
        ("GET", "/v1/reports"),
        ("GET", "/v1/datasets"),
        ("POST", "/v1/datasets"),
        ("GET", "/v1/jobs"),
        ("GET", "/v1/jobs/abc"),
        ("POST", "/v1/jobs/eval"),
        ("POST", "/v1/jobs/reindex"),
        ("POST", "/v1/jobs/rag-eval"),
    ]
    for method, path in paths:
        r = httpx.request(method, f"{api}{path}", timeout=10)
        assert r.status_code == 401, (method, path, r.status_code)
    ok = {"Authorization": f"Bearer {degraded_api.key}"}
    body = httpx.get(f"{api}/v1/registry/models", headers=ok, timeout=30).json()
    assert any(m["name"] == ui_data.llm_run for m in body["models"])
    assert body["warnings"] and "Chroma" in body["warnings"][0]  # Chroma is down there


def test_openapi_documents_the_new_endpoints(stack: Stack) -> None:
    spec = get(stack, "/openapi.json").json()
    expected = {
        "/v1/registry/models": "get",
        "/v1/registry/models/{kind}/{name}": "get",
        "/v1/registry/models/{kind}/{name}/files/{filename}": "get",
        "/v1/registry/models/llm/{name}/deploy": "post",
        "/v1/reports": "get",
        "/v1/reports/{name}": "get",
        "/v1/reports/{name}/files/{filename}": "get",
        "/v1/datasets": "post",
        "/v1/jobs": "get",
        "/v1/jobs/{job_id}": "get",
        "/v1/jobs/eval": "post",
        "/v1/jobs/reindex": "post",
        "/v1/jobs/rag-eval": "post",
    }
    for path, method in expected.items():
        op = spec["paths"][path][method]
        assert op["summary"], path
        ok = next(c for c in ("200", "201", "202") if c in op["responses"])
        assert op["responses"][ok]["content"], path
        assert "501" not in op["responses"], path
    schemas = spec["components"]["schemas"]
    assert {"JobInfo", "ModelsResponse", "ReportDetail", "DatasetUploaded", "ErrorBody"} <= set(
        schemas
    )
    deploy = spec["paths"]["/v1/registry/models/llm/{name}/deploy"]["post"]
    assert {"202", "404", "409", "422"} <= set(deploy["responses"])
    assert deploy["responses"]["202"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/JobInfo"
    )
    assert set(schemas["DeployRequest"]["properties"]) == {"to", "quant", "name"}
    assert "deploy" in schemas["JobInfo"]["properties"]["kind"]["enum"]
    job_op = spec["paths"]["/v1/jobs/{job_id}"]["get"]["responses"]["200"]
    assert job_op["content"]["application/json"]["schema"]["$ref"].endswith("/JobInfo")
