"""Export and deploy on real components: a LoRA run on the bundled SmolLM2, llama.cpp's own
converter and quantizer, the parity gate and stop check, the strict fake Ollama (a real
HTTP server in a thread, generating with llama.cpp), the local llama.cpp server restarted
on the export, and the RAG API switched to it without losing its collections.

The run and its export (`exported`, once per session) are tests/integration/
converter_fixtures.py; exports that must fail their gates are test_converter_gates.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from platform_cli.stack.llamacpp_target import served_path
from services.converter import deploy as dep
from services.converter import modelfile as mf
from services.converter.ollama_template import render_go_semantics, translate
from services.converter.parity import THRESHOLDS
from services.converter.servable import servable_gguf
from tests.fake_ollama import FakeOllama
from tests.go_render import go_renderer
from tests.integration.conftest import Stack
from tests.integration.converter_fixtures import ANSWER, MESSAGES, QUANTS, RUN, SYSTEM

# llama.cpp's enum llama_ftype, as the GGUF's general.file_type records it
FILE_TYPES = {"f16": 1, "q8_0": 7, "q4_k_m": 15, "q5_k_m": 17}


def test_export_files_parity_and_modelfile(exported: dict[str, Any], stack: Stack) -> None:
    from gguf import GGUFReader

    exp = exported["record"].export
    run_dir = stack.registry.entry_dir("llm", RUN)
    # sharded merge (200MB shards of a ~540 MB fp32 model) and every file, as recorded
    shards = [f["file"] for f in exp.merged["files"] if f["file"].endswith(".safetensors")]
    assert len(shards) >= 2, shards
    assert list(exp.files) == list(QUANTS) == exp.quants
    for q in QUANTS:
        rec = exp.files[q]
        p = Path(rec.path)
        assert p.parent == run_dir / "gguf" and p.stat().st_size == rec.size
        assert dep.sha256_file(p) == rec.sha256
        # the file is of the type it is named (llama.cpp's quantizer wrote that type)
        assert GGUFReader(p).fields["general.file_type"].contents() == FILE_TYPES[q]
        par = rec.parity
        assert par.tokenizer_match == "6/6"
        assert par.ok, par
        assert par.threshold == THRESHOLDS[q] == {"f16": 0.98, "q8_0": 0.90}.get(q, 0.75)
        assert par.top1_agreement >= par.threshold
        assert rec.stop_check.ok, rec.stop_check
        assert rec.ok
    sizes = [exp.files[q].size for q in ("q4_k_m", "q5_k_m", "q8_0", "f16")]
    assert sizes == sorted(sizes), sizes
    # one export record: what `--json` printed, and no duplicate top-level keys
    out = exported["output"]
    assert out["ok"] and exp.ok and not exp.problems
    assert {q: f["sha256"] for q, f in out["files"].items()} == {
        q: f.sha256 for q, f in exp.files.items()
    }
    raw = json.loads((run_dir / "meta.json").read_text())
    assert not {"gguf", "exports", "parity"} & set(raw)
    # the base GGUF's tokenizer was carried (pre-tokenizer included), chat template is ours
    fields = GGUFReader(exp.files["q8_0"].path).fields
    assert fields["tokenizer.ggml.pre"].contents() == "smollm"
    assert fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert len(fields["tokenizer.ggml.tokens"].contents()) == 49152
    assert "<|im_start|>" in fields["tokenizer.chat_template"].contents()
    # nothing half-written is left behind
    assert not [p for p in run_dir.iterdir() if p.name.startswith((".tmp-", ".old-"))]
    # the Modelfile: FROM the default quant, translated TEMPLATE, stops, SYSTEM from
    # training, --messages as MESSAGE lines
    parsed = mf.parse((run_dir / "Modelfile").read_text())
    assert parsed.from_ == f"./gguf/{RUN}.q8_0.gguf"
    assert parsed.system == SYSTEM
    assert parsed.stops == ["<|im_end|>"]
    assert parsed.template is not None and "range $i, $_ := .Messages" in parsed.template
    assert parsed.messages == MESSAGES and exp.modelfile["messages"] == len(MESSAGES)
    assert not parsed.adapters


def test_lora_gguf_and_adapter_modelfile(exported: dict[str, Any], stack: Stack) -> None:
    """--lora-gguf: the adapter as a GGUF LoRA of llama.cpp's convert_lora_to_gguf.py, and
    Modelfile.adapter = the base's served GGUF + that ADAPTER, with the same fields."""
    from gguf import GGUFReader

    exp = exported["record"].export
    run_dir = stack.registry.entry_dir("llm", RUN)
    lora = exp.lora_gguf
    assert lora is not None and Path(lora.path) == run_dir / "gguf" / f"{RUN}.lora.f16.gguf"
    assert Path(lora.path).stat().st_size == lora.size
    assert dep.sha256_file(Path(lora.path)) == lora.sha256
    reader = GGUFReader(lora.path)
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.type"].contents() == "lora"
    assert reader.fields["adapter.lora.alpha"].contents() == 16
    base = stack.registry.llm("smollm2-135m-instruct").record
    n_layers = GGUFReader(str(base.serve_path)).fields["llama.block_count"].contents()
    names = {t.name for t in reader.tensors}  # A and B of q and v in every layer
    assert names == {
        f"blk.{i}.{m}.weight.lora_{ab}"
        for i in range(n_layers)
        for m in ("attn_q", "attn_v")
        for ab in "ab"
    }
    assert exp.modelfile["adapter_modelfile"] == str(run_dir / "Modelfile.adapter")
    main = mf.parse((run_dir / "Modelfile").read_text())
    adapter = mf.parse((run_dir / "Modelfile.adapter").read_text())
    assert adapter.from_ == str(base.serve_path) and Path(adapter.from_).is_file()
    assert adapter.adapters == [f"./gguf/{RUN}.lora.f16.gguf"]
    assert (adapter.template, adapter.system, adapter.parameters, adapter.messages) == (
        main.template,
        main.system,
        main.parameters,
        main.messages,
    )


def test_deploy_ollama_against_documented_api(
    exported: dict[str, Any], stack: Stack, tmp_path: Path
) -> None:
    go = go_renderer()

    def render(template: str, msgs: list[dict[str, str]]) -> str:
        if go is not None:
            return go([(template, msgs)])[0]
        return render_go_semantics(translate_from_go(template), msgs)

    fake = FakeOllama(tmp_path / "ollama", render)
    host = fake.start()
    try:
        registry = stack.registry
        entry = registry.llm(RUN)
        f = dep.exported_file(entry, "q8_0")
        target = dep.OllamaTarget(host)
        info = target.install(entry, f, "lumen-tuned", lambda m: None)
        assert info.details["files"] == {f.path.name: f"sha256:{f.sha256}"}
        calls = [c for c in fake.requests if c[1] != "/api/tags"]
        assert calls[:5] == [
            ("HEAD", f"/api/blobs/sha256:{f.sha256}"),
            ("POST", f"/api/blobs/sha256:{f.sha256}"),
            ("POST", "/api/create"),
            ("POST", "/api/show"),
            ("POST", "/api/generate"),
        ]
        assert info.response.strip()
        model = fake.models["lumen-tuned:latest"]
        assert model["system"] == SYSTEM and model["parameters"]["stop"] == ["<|im_end|>"]
        # /api/chat through the registered template stops at the end of the turn
        r = httpx.post(
            f"{host}/api/chat",
            json={
                "model": "lumen-tuned",
                "messages": [{"role": "user", "content": "What is the capital of France?"}],
                "stream": False,
                "options": {"temperature": 0, "num_predict": 120},
            },
            timeout=120,
        ).json()
        assert r["done_reason"] == "stop", r
        assert "<|im_end|>" not in r["message"]["content"]
        assert r["message"]["content"].strip() == ANSWER  # the merged model's answer
        # the listing shows it; a second deploy finds the blob and does not upload again
        import ollama

        assert "lumen-tuned:latest" in [m.model for m in ollama.Client(host=host).list().models]
        n_posts = sum(1 for c in fake.requests if c[0] == "POST" and "/blobs/" in c[1])
        target.install(entry, f, "lumen-tuned", lambda m: None)
        assert sum(1 for c in fake.requests if c[0] == "POST" and "/blobs/" in c[1]) == n_posts
    finally:
        fake.stop()


def _chat(host: str, model: str, question: str) -> str:
    r = httpx.post(
        f"{host}/api/chat",
        json={
            "model": model,
            "messages": [{"role": "user", "content": question}],
            "stream": False,
            "options": {"temperature": 0, "num_predict": 48},
        },
        timeout=120,
    )
    assert r.status_code == 200, r.text
    return str(r.json()["message"]["content"]).strip()


def test_deploy_adapter_to_ollama_registers_base_plus_lora(
    exported: dict[str, Any], stack: Stack, tmp_path: Path
) -> None:
    """`tunestack llm deploy RUN --to ollama --adapter`: the base's GGUF and the --lora-gguf
    file as ADAPTER, with the Modelfile's fields (its --messages included); the fake applies
    the adapter with llama.cpp, so the model answers as the merged one does and the same
    base without the adapter does not."""
    import ollama

    fake = FakeOllama(
        tmp_path / "ollama", lambda t, m: render_go_semantics(translate_from_go(t), m)
    )
    host = fake.start()
    try:
        exp = exported["record"].export
        assert exp.lora_gguf is not None
        base = Path(str(stack.registry.llm("smollm2-135m-instruct").record.serve_path))
        p = stack.cli(
            "llm",
            "deploy",
            RUN,
            "--to",
            "ollama",
            "--adapter",
            "--name",
            "lumen-adapter",
            "--no-switch",
            env={"OLLAMA_HOST": host, "COLUMNS": "400"},
        )
        assert p.returncode == 0, p.stdout + p.stderr
        model = fake.models["lumen-adapter:latest"]
        assert model["gguf"].name == f"sha256-{dep.sha256_file(base)}"
        assert [a.name for a in model["adapters"]] == [f"sha256-{exp.lora_gguf.sha256}"]
        assert model["messages"] == MESSAGES and model["system"] == SYSTEM
        assert model["parameters"]["stop"] == ["<|im_end|>"]
        last = stack.registry.llm(RUN).record.deployments[-1]
        assert last.to == "ollama" and last.name == "lumen-adapter"
        assert last.model_extra is not None and last.model_extra["adapters"] == {
            f"{RUN}.lora.f16.gguf": f"sha256:{exp.lora_gguf.sha256}"
        }
        # the same base blob and fields without the ADAPTER: the base's own answer
        client = ollama.Client(host=host)
        client.create(
            model="base-only",
            files={base.name: f"sha256:{dep.sha256_file(base)}"},
            template=model["template"],
            system=model["system"],
            parameters={"stop": model["parameters"]["stop"]},
            messages=model["messages"],
            stream=False,
        )
        question = "What is the capital of France?"
        assert _chat(host, "lumen-adapter", question) == ANSWER
        assert ANSWER not in _chat(host, "base-only", question)
    finally:
        fake.stop()


def translate_from_go(template: str) -> Any:
    """The GoTemplate our exporter wrote (fallback renderer when Go is not installed)."""
    from services.converter.ollama_template import CHATML_GO, GoTemplate

    head, _, tail = CHATML_GO.partition("__DEFAULT_SYSTEM__")
    if template.startswith(head):
        default = template[len(head) : len(template) - len(tail)]
        return GoTemplate("chatml", template, ["<|im_end|>"], default)
    return translate("{% for m in messages %}{% endfor %}")  # raises: unknown


def test_deploy_refuses_tampered_or_failed_files(exported: dict[str, Any], stack: Stack) -> None:
    registry = stack.registry
    entry = registry.llm(RUN)  # a copy in memory: nothing below is written
    assert entry.record.export is not None
    bad = entry.record.export.files["q8_0"]
    bad.ok = False
    with pytest.raises(dep.BadInput, match="failed its checks"):
        dep.exported_file(entry, "q8_0")
    bad.ok = True
    bad.sha256 = "0" * 64
    with pytest.raises(dep.TunestackError, match="sha256"):
        dep.exported_file(entry, "q8_0")
    with pytest.raises(dep.NotFound, match="no q6_k export"):
        dep.exported_file(registry.llm(RUN), "q6_k")


def test_llamacpp_deploy_switches_rag_api_and_keeps_collections(
    exported: dict[str, Any], stack: Stack, tmp_path: Path
) -> None:
    api = stack.api
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "hours.md").write_text("Lumen & Oak's Berlin store opens at 9:00 on weekdays.\n")
    env = stack.env()
    cli = [sys.executable, "-m", "platform_cli.main"]
    if shutil.which("tunestack"):
        cli = [str(Path(sys.executable).parent / "tunestack")]
    subprocess.run(
        [*cli, "ingest", str(docs), "-c", "convdeploy"], env=env, check=True, capture_output=True
    )
    before = httpx.get(f"{api}/v1/admin/llm", timeout=10).json()
    try:
        p = subprocess.run(
            [
                *cli,
                "llm",
                "deploy",
                RUN,
                "--to",
                "llamacpp",
                "--name",
                "lumen-tuned",
                "--quant",
                "q8_0",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert p.returncode == 0, p.stdout + p.stderr
        now = httpx.get(f"{api}/v1/admin/llm", timeout=10).json()
        assert now["model"] == "lumen-tuned"
        ids = [m["id"] for m in httpx.get(f"{api}/v1/models", timeout=30).json()["data"]]
        assert "lumen-tuned" in ids and "rag/convdeploy" in ids
        r = httpx.post(
            f"{api}/v1/chat/completions",
            json={
                "model": "rag/convdeploy",
                "messages": [{"role": "user", "content": "When does the Berlin store open?"}],
            },
            timeout=300,
        )
        assert r.status_code == 200, r.text
        assert r.json()["sources"][0]["file_name"] == "hours.md"
        # a refused switch (a server the API was not configured with) leaves the deployed one
        r = httpx.post(
            f"{api}/v1/admin/llm",
            json={"model": "no-such-model", "base_url": "http://127.0.0.1:9/v1"},
            timeout=30,
        )
        assert r.status_code == 422, r.text
        assert "not one of this API's LLM servers" in r.json()["message"]
        # a model its own server does not serve: 404 naming what it serves, not "down"
        r = httpx.post(f"{api}/v1/admin/llm", json={"model": "no-such-model"}, timeout=60)
        assert r.status_code == 404, r.text
        assert "lumen-tuned" in r.json()["hint"]
        assert httpx.get(f"{api}/v1/admin/llm", timeout=10).json()["model"] == "lumen-tuned"
        assert stack.registry.llm(RUN).record.deployments[-1].to == "llamacpp"
    finally:
        _restore_base(stack, before)


def test_llamacpp_deploy_restarts_the_previous_server_when_the_new_one_fails(
    exported: dict[str, Any], stack: Stack
) -> None:
    """The new server refuses to start (a context size it rejects, TUNESTACK_LLM_CTX=-1;
    the in-process preflight loads the file fine): deploy fails with that said, the
    previous server runs again on its command line and answers, the RAG API was never
    switched and nothing is recorded as deployed."""
    s = stack.settings
    api = stack.api
    before = httpx.get(f"{api}/v1/admin/llm", timeout=10).json()
    argv = stack.local.running_argv("llm")
    assert argv is not None
    flag = "--alias" if "--alias" in argv else "--model_alias"  # llama-server, or the Python one
    alias = argv[argv.index(flag) + 1]
    n_deployed = len(stack.registry.llm(RUN).record.deployments)
    served = served_path(stack.home).read_bytes() if served_path(stack.home).is_file() else None
    try:
        p = stack.cli(
            "llm",
            "deploy",
            RUN,
            "--to",
            "llamacpp",
            "--name",
            "lumen-broken",
            "--quant",
            "q8_0",
            env={"TUNESTACK_LLM_CTX": "-1", "COLUMNS": "400"},
        )
        out = p.stdout + p.stderr
        assert p.returncode != 0, out
        assert "did not start or answer as 'lumen-broken'" in out, out
        assert "the previous server was restored" in out, out
        assert stack.local.running_argv("llm") == argv
        models = httpx.get(f"{s.llm_url}/models", timeout=10).json()["data"]
        assert [m["id"] for m in models] == [alias]
        r = httpx.post(
            f"{s.llm_url}/chat/completions",
            json={"model": alias, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
            timeout=120,
        )
        assert r.status_code == 200, r.text
        assert httpx.get(f"{api}/v1/admin/llm", timeout=10).json() == before
        assert len(stack.registry.llm(RUN).record.deployments) == n_deployed
        now = served_path(stack.home).read_bytes() if served_path(stack.home).is_file() else None
        assert now == served
    finally:
        if stack.local.running_argv("llm") != argv:
            _restore_base(stack, before)


def _restore_base(stack: Stack, before: dict[str, Any]) -> None:
    """Put the session's stack back on the base model for the tests that follow."""
    _, gguf = servable_gguf(stack.registry, stack.settings.default_llm)
    local = stack.local
    local.stop("llm")
    spec = local.spec("llm", gguf, stack.settings.default_llm)
    local.start(spec)
    local.wait_healthy(spec, stack.settings.start_timeout_s)
    served_path(stack.home).unlink(missing_ok=True)
    httpx.post(f"{stack.api}/v1/admin/llm", json={"model": before["model"]}, timeout=60)


def test_api_deploy_job_to_ollama_switches_or_keeps_the_old_model(
    exported: dict[str, Any], stack: Stack, tmp_path: Path
) -> None:
    """POST /v1/registry/models/llm/RUN/deploy (what the UI's Deploy button calls) on an
    API of its own whose OLLAMA_HOST is the strict fake: refused while Ollama is down (the
    old model keeps serving), then registered, verified, switched and recorded."""
    from tests.conftest import free_port
    from tests.integration.conftest import start_api
    from tests.integration.ui_fixtures import ingest, wait_job

    fake = FakeOllama(
        tmp_path / "ollama", lambda t, m: render_go_semantics(translate_from_go(t), m)
    )
    ollama_port, api_port = free_port(), free_port()
    host = f"http://127.0.0.1:{ollama_port}"
    deployment = stack.home / "run" / "llm-deployment.json"
    saved = deployment.read_bytes() if deployment.is_file() else None
    proc = start_api(stack, api_port, OLLAMA_HOST=host, TUNESTACK_RAG_WARM_EMBEDDER="false")
    api = f"http://127.0.0.1:{api_port}"
    url = f"{api}/v1/registry/models/llm/{RUN}/deploy"
    try:
        serving = httpx.get(f"{api}/v1/registry/models", timeout=30).json()["serving"]
        assert serving["deploy_available"] and serving["ollama_host"] == host
        before = httpx.get(f"{api}/v1/admin/llm", timeout=10).json()
        # llama.cpp is the CLI's: 409 with the exact command, nothing queued
        r = httpx.post(url, json={"to": "llamacpp"}, timeout=30)
        assert r.status_code == 409
        assert r.json()["hint"] == f"tunestack llm deploy {RUN} --to llamacpp --quant q8_0"
        r = httpx.post(url, json={"quant": "q6_k"}, timeout=30)
        assert r.status_code == 404 and "has no q6_k export" in r.json()["message"]
        assert f"tunestack llm export {RUN} --quant q6_k" in r.json()["hint"]

        # Ollama down: the job fails with message + hint, the old model keeps serving
        job = httpx.post(url, json={"name": "lumen-api"}, timeout=30).json()
        assert job["kind"] == "deploy" and job["params"]["quant"] == "q8_0"
        job = wait_job(api, job)
        assert job["status"] == "failed", job
        assert host in job["error"]["message"] and "OLLAMA_HOST" in job["error"]["hint"]
        assert httpx.get(f"{api}/v1/admin/llm", timeout=10).json() == before

        fake.start(ollama_port)
        job = httpx.post(url, json={"name": "lumen-api"}, timeout=30).json()
        messages = set()
        deadline = time.monotonic() + 600
        while job["status"] in ("queued", "running") and time.monotonic() < deadline:
            messages.add(job["message"])
            time.sleep(0.2)
            job = httpx.get(f"{api}/v1/jobs/{job['id']}", timeout=10).json()
        assert job["status"] == "done", job
        assert any("Ollama" in m for m in messages), messages
        res = job["result"]
        assert res["model"] == "lumen-api" and res["base_url"] == f"{host}/v1"
        assert res["verify"]["response"].strip() and res["previous"] == before
        now = httpx.get(f"{api}/v1/admin/llm", timeout=10).json()
        assert now == {"base_url": f"{host}/v1", "model": "lumen-api"}
        assert "lumen-api:latest" in fake.models
        calls = [c for c in fake.requests if c[0] != "HEAD"]
        assert [c[1] for c in calls[-4:]] == [
            "/api/show",
            "/api/generate",
            "/v1/models",
            "/v1/chat/completions",  # the API's own verification before the swap
        ]
        assert json.loads(deployment.read_text())["model"] == "lumen-api"
        last = stack.registry.llm(RUN).record.deployments[-1]
        assert last.to == "ollama" and last.name == "lumen-api" and last.quant == "q8_0"
        # the RAG chain now answers through Ollama's OpenAI endpoint
        docs = tmp_path / "docs"
        docs.mkdir()
        (docs / "hours.md").write_text("Lumen & Oak's Berlin store opens at 9:00 on weekdays.\n")
        ingest(api, "convollama", [docs / "hours.md"])
        n_chats = sum(1 for c in fake.requests if c[1] == "/v1/chat/completions")
        r = httpx.post(
            f"{api}/v1/chat/completions",
            json={
                "model": "rag/convollama",
                "messages": [{"role": "user", "content": "When does the Berlin store open?"}],
                "max_tokens": 48,
            },
            timeout=300,
        )
        assert r.status_code == 200, r.text
        assert r.json()["sources"][0]["file_name"] == "hours.md"
        assert sum(1 for c in fake.requests if c[1] == "/v1/chat/completions") == n_chats + 1

        # Ollama gone after a deploy: another deploy fails, 'lumen-api' keeps serving
        fake.stop()
        job = wait_job(api, httpx.post(url, json={"name": "lumen-other"}, timeout=30).json())
        assert job["status"] == "failed" and job["error"]["hint"]
        assert httpx.get(f"{api}/v1/admin/llm", timeout=10).json()["model"] == "lumen-api"
    finally:
        fake.stop()
        httpx.delete(f"{api}/v1/collections/convollama", timeout=30)
        proc.terminate()
        proc.wait(timeout=30)
        if saved is None:
            deployment.unlink(missing_ok=True)
        else:
            deployment.write_bytes(saved)
