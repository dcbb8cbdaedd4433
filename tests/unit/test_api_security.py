"""The API's front door and its holes, each closed: the real app (create_app) in process,
with its real key store, guard and job manager; peers (Chroma, the LLM) are not needed
for what is checked here, so none runs.

Each test names the hole it closes (issue "Safe to share"); before the fix every one of
them failed (the old app accepted a made-up LLM URL, had one optional shared key, no
host/origin checks, no limits, and answered FastAPI's own {"detail"} shapes).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.common.auth import Authenticator, KeyStore
from services.common.errors import BadInput, Busy
from services.rag_api.app import create_app
from services.rag_api.context import RagContext, deployment_path
from services.rag_api.http_errors import redact
from services.rag_api.jobs import JobManager, Progress
from services.rag_api.security import (
    ROUTE_ROLES,
    ExposureRefused,
    Guard,
    GuardConfig,
    check_exposure,
)
from services.rag_api.settings import RagSettings
from tests.conftest import free_port

LOCAL = "http://127.0.0.1:8000"
ENV_KEY = "env-admin-key-0123456789"


def settings(home: Path, **kw: Any) -> RagSettings:
    base: dict[str, Any] = {
        "home": home,
        "warm_embedder": False,
        "chroma_url": f"http://127.0.0.1:{free_port()}",
        "llm_base_url": f"http://127.0.0.1:{free_port()}/v1",
    }
    return RagSettings(**{**base, **kw})


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, str]:
    store = KeyStore(tmp_path)
    return {role: store.create(f"{role}-1", role)[1] for role in ("user", "admin")}  # type: ignore[arg-type]


def client(s: RagSettings, base_url: str = LOCAL) -> TestClient:
    return TestClient(create_app(s), base_url=base_url, raise_server_exceptions=False)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def is_error(r: Any, status: int, error: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) >= {"error", "message"} and "detail" not in body, body
    if error:
        assert body["error"] == error, body
    return body


# ---- 1. the LLM switch: configured servers only ---------------------------------------------


def test_switch_to_a_made_up_url_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    c = client(settings(tmp_path))
    before = c.get("/v1/admin/llm").json()
    probe = {"base_url": "http://127.0.0.1:9/v1", "model": "x", "verify": False}
    body = is_error(c.post("/v1/admin/llm", json=probe), 422, "BadInput")
    assert "not one of this API's LLM servers" in body["message"]
    assert "TUNESTACK_RAG_LLM_SERVERS" in body["hint"]
    assert c.get("/v1/admin/llm").json() == before
    # a key in the body is refused outright (it was stored and sent upstream before)
    leak = {"model": "x", "api_key": "sk-mine", "verify": False}
    is_error(c.post("/v1/admin/llm", json=leak), 422, "BadInput")


def test_switch_sends_the_configured_key_only_to_its_own_server(tmp_path: Path) -> None:
    from services.rag_api.llm_switch import target_for

    s = settings(tmp_path, llm_api_key="sk-upstream", llm_servers="http://10.0.0.5:8080/v1")
    assert target_for(s, s.llm_base_url, "m").api_key == "sk-upstream"
    assert target_for(s, "http://10.0.0.5:8080/v1/", "m").api_key != "sk-upstream"
    assert target_for(s, "http://127.0.0.1:11434/v1", "m").api_key != "sk-upstream"
    with pytest.raises(BadInput):
        target_for(s, "http://169.254.169.254/latest", "m")


def test_switch_is_an_admin_action(tmp_path: Path, keys: dict[str, str]) -> None:
    s = settings(tmp_path)
    c = client(s)
    body = {"model": "x", "verify": False}
    is_error(c.post("/v1/admin/llm", json=body, headers=bearer(keys["user"])), 403, "Forbidden")
    r = c.post("/v1/admin/llm", json=body, headers=bearer(keys["admin"]))
    assert r.status_code == 200 and r.json()["current"]["model"] == "x"


# ---- 2. roles and keys --------------------------------------------------------------------


def test_roles_keys_and_revocation(tmp_path: Path, keys: dict[str, str]) -> None:
    c = client(settings(tmp_path))
    assert c.get("/healthz").status_code == 200  # the only public route
    for path in ("/v1/whoami", "/openapi.json", "/docs", "/v1/jobs", "/v1/nope"):
        body = is_error(c.get(path), 401, "Unauthorized")
        assert "tunestack keys create" in body["hint"]
    is_error(c.get("/v1/whoami", headers=bearer("tsk_00000000_" + "x" * 43)), 401)
    me = c.get("/v1/whoami", headers=bearer(keys["user"])).json()
    assert me["role"] == "user" and me["name"] == "user-1" and me["auth"] is True
    assert c.get("/openapi.json", headers=bearer(keys["user"])).status_code == 200
    is_error(c.get("/v1/jobs", headers=bearer(keys["user"])), 403, "Forbidden")
    assert c.get("/v1/jobs", headers=bearer(keys["admin"])).status_code == 200
    # revoked in another process (the CLI): refused from the next request on
    key_id = keys["user"].split("_")[1]
    KeyStore(tmp_path).revoke(key_id)
    is_error(c.get("/v1/whoami", headers=bearer(keys["user"])), 401)


def test_keys_are_stored_hashed_and_private(tmp_path: Path, keys: dict[str, str]) -> None:
    raw = (tmp_path / "keys.json").read_text()
    for token in keys.values():
        assert token.split("_", 2)[2] not in raw
    assert (tmp_path / "keys.json").stat().st_mode & 0o077 == 0
    assert [k.role for k in KeyStore(tmp_path).list()] == ["user", "admin"]


def test_every_route_has_a_role_and_unknown_routes_stop_the_start(tmp_path: Path) -> None:
    app = create_app(settings(tmp_path))
    paths = app.openapi()["paths"]
    assert {(m.upper(), p) for p, ops in paths.items() for m in ops} <= set(ROUTE_ROLES)
    assert len(paths) >= 20
    from services.rag_api.security import check_route_roles

    with pytest.raises(RuntimeError, match="POST /v1/new"):
        check_route_roles({**paths, "/v1/new": {"post": {}}})


def test_empty_key_is_a_startup_error_never_open(tmp_path: Path) -> None:
    for key in ("", "   ", "short"):
        with pytest.raises(BadInput, match="TUNESTACK_API_KEY"):
            create_app(settings(tmp_path, api_key=key))


def test_beyond_loopback_without_keys_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ExposureRefused) as e:
        create_app(settings(tmp_path, host="0.0.0.0"))
    assert "tunestack keys create" in (e.value.hint or "")
    with pytest.raises(ExposureRefused):  # compose: listens on 0.0.0.0, published on BIND
        create_app(settings(tmp_path, host="0.0.0.0", exposed_on="192.168.1.20"))
    create_app(settings(tmp_path, host="0.0.0.0", exposed_on="127.0.0.1"))
    create_app(settings(tmp_path, host="0.0.0.0", api_key=ENV_KEY))
    store = KeyStore(tmp_path / "h2")
    store.create("ops", "admin")
    check_exposure("0.0.0.0", None, Authenticator(store, None))


def test_the_entrypoint_prints_the_refusal_and_exits_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {"TUNESTACK_HOME": str(tmp_path), "TUNESTACK_RAG_HOST": "0.0.0.0", "PATH": "/usr/bin"}
    r = subprocess.run(
        [sys.executable, "-m", "services.rag_api"], env=env, capture_output=True, text=True
    )
    assert r.returncode == 2
    assert "tunestack keys create" in r.stderr and "Traceback" not in r.stderr


# ---- 6. cross-site requests, auth before the body, limits -----------------------------------


def test_host_names_other_than_loopback_are_refused_without_keys(tmp_path: Path) -> None:
    s = settings(tmp_path)
    is_error(client(s, "http://evil.example:8000").get("/v1/whoami"), 421, "BadHost")
    assert client(s, "http://localhost:8000").get("/v1/whoami").status_code == 200
    s2 = settings(tmp_path, allowed_hosts="rag-api")
    assert client(s2, "http://rag-api:8000").get("/v1/whoami").status_code == 200


def test_cross_site_writes_are_refused_even_with_a_key(tmp_path: Path) -> None:
    c = client(settings(tmp_path, api_key=ENV_KEY))
    files = {"files": ("a.md", b"# hi"), "collection": (None, "kb")}
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        r = c.post("/v1/ingest", files=files, headers={**headers, **bearer(ENV_KEY)})
        is_error(r, 403, "CrossOrigin")
    assert not (tmp_path / "uploads").exists()
    same = c.post(
        "/v1/admin/llm",
        json={"model": "m", "verify": False},
        headers={"Origin": LOCAL, **bearer(ENV_KEY)},
    )
    assert same.status_code == 200
    allowed = client(settings(tmp_path, api_key=ENV_KEY, allowed_origins="http://ui.example"))
    r = allowed.post(
        "/v1/admin/llm",
        json={"model": "m", "verify": False},
        headers={"Origin": "http://ui.example", **bearer(ENV_KEY)},
    )
    assert r.status_code == 200


async def _call(app: Any, method: str, path: str, headers: dict[str, str]) -> tuple[int, int]:
    """One raw ASGI request; returns (status, how many times the body was read)."""
    reads = 0
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"x" * 1000, "more_body": False}

    async def send(msg: dict[str, Any]) -> None:
        nonlocal status
        if msg["type"] == "http.response.start":
            status = msg["status"]

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("203.0.113.9", 5000),
        "server": ("127.0.0.1", 8000),
        "scheme": "http",
        "root_path": "",
        "app": app,
    }
    await app(scope, receive, send)
    return status, reads


def test_authentication_happens_before_the_body_is_read(tmp_path: Path) -> None:
    app = create_app(settings(tmp_path, api_key=ENV_KEY))
    headers = {"host": "127.0.0.1:8000", "content-type": "multipart/form-data; boundary=x"}
    for path in ("/v1/datasets", "/v1/ingest"):
        status, reads = asyncio.run(_call(app, "POST", path, headers))
        assert (status, reads) == (401, 0)


def test_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    c = client(settings(tmp_path, api_key=ENV_KEY, rate_per_minute=3))
    codes = [c.get("/v1/whoami", headers=bearer(ENV_KEY)).status_code for _ in range(3)]
    assert codes == [200, 200, 200]
    r = c.get("/v1/whoami", headers=bearer(ENV_KEY))
    is_error(r, 429, "TooManyRequests")
    assert 1 <= int(r.headers["Retry-After"]) <= 60


def test_failed_keys_are_limited_per_address_and_key_id(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    _, alice = store.create("alice", "user")
    _, bob = store.create("bob", "user")
    c = client(settings(tmp_path, api_key=ENV_KEY, failed_auth_per_minute=3))
    wrong_alice = alice[: alice.rindex("_") + 1] + "x" * 32
    for _ in range(3):
        is_error(c.get("/v1/whoami", headers=bearer(wrong_alice)), 401)
    r = c.get("/v1/whoami", headers=bearer(alice))  # alice's key from this address waits now
    is_error(r, 429, "TooManyRequests")
    assert int(r.headers["Retry-After"]) >= 1
    # others behind the same address (every UI user is) are not locked out by the guesser
    assert c.get("/v1/whoami", headers=bearer(bob)).status_code == 200
    # no key at all guesses nothing: not counted
    for _ in range(5):
        is_error(c.get("/v1/whoami"), 401)
    for _ in range(3):
        is_error(c.get("/v1/whoami", headers=bearer("guess-" + "x" * 20)), 401)
    is_error(c.get("/v1/whoami", headers=bearer("other-" + "x" * 20)), 429)
    assert c.get("/v1/whoami", headers=bearer(bob)).status_code == 200


def test_concurrency_limit_per_key() -> None:
    release = asyncio.Event()
    seen: list[int] = []

    async def slow_app(scope: Any, receive: Any, send: Any) -> None:
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    auth = Authenticator(KeyStore(Path("/nonexistent")), ENV_KEY)
    cfg = GuardConfig(frozenset(), frozenset(), 100, 1, 30)
    guard = Guard(slow_app, auth=auth, config=cfg)

    async def one() -> None:
        status, _ = await _call(
            guard,
            "GET",
            "/v1/whoami",
            {"host": "127.0.0.1", "authorization": f"Bearer {ENV_KEY}"},
        )
        seen.append(status)

    async def main() -> None:
        first = asyncio.create_task(one())
        await asyncio.sleep(0.05)
        await one()  # refused while the first holds the only slot
        release.set()
        await first

    asyncio.run(main())
    assert seen == [429, 200]


# ---- 12. error hygiene ------------------------------------------------------------------------


def test_every_error_has_the_documented_shape_and_no_internals(tmp_path: Path) -> None:
    s = settings(tmp_path, api_key=ENV_KEY, max_upload_mb=1)
    app = create_app(s)

    def boom() -> None:
        raise RuntimeError(f"secret at {tmp_path}/deep/inside.py")

    app.add_api_route("/v1/boom", boom)
    c = TestClient(app, base_url=LOCAL, raise_server_exceptions=False)
    h = bearer(ENV_KEY)
    is_error(c.get("/v1/nope", headers=h), 404, "NotFound")
    is_error(c.delete("/v1/whoami", headers=h), 405, "MethodNotAllowed")
    is_error(c.post("/v1/retrieve", json={"query": 1}, headers=h), 422, "BadInput")
    body = is_error(c.get("/v1/boom", headers=h), 500, "InternalError")
    assert "secret" not in json.dumps(body) and str(tmp_path) not in json.dumps(body)
    assert "ref" in body["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(3):
            yield b"x" * 2**20

    r = c.post(
        "/v1/datasets",
        content=chunks(),
        headers={**h, "Content-Type": "multipart/form-data; boundary=b"},
    )
    is_error(r, 413, "TooLarge")
    assert not list((tmp_path / "datasets").glob("*")) if (tmp_path / "datasets").exists() else True


def test_redact_shows_known_roots_relative_and_hides_other_paths(tmp_path: Path) -> None:
    up = tmp_path / "uploads"
    msg = f"cannot read {up}/kb/a.pdf nor /etc/secret/conf.yaml; see http://host/x/y"
    out = redact(msg, (up, tmp_path))
    assert out == "cannot read kb/a.pdf nor conf.yaml; see http://host/x/y"


def test_llm_timeouts_are_timeouts_not_unreachable() -> None:
    import httpx

    from services.rag_api.llm import LlmTarget, translate

    t = LlmTarget("http://127.0.0.1:1/v1", "m", "k", timeout_s=3)
    e = translate(t, httpx.ReadTimeout("slow"))
    assert e.status_code == 504 and "did not answer within 3 s" in e.message
    assert translate(t, httpx.ConnectError("no")).status_code == 503
    import openai

    slow = openai.APITimeoutError(httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions"))
    assert translate(t, slow).status_code == 504  # an APIConnectionError subclass, yet slow


# ---- 9. jobs ---------------------------------------------------------------------------------


def wait(m: JobManager, job_id: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while (info := m.get(job_id))["status"] != status:
        assert time.monotonic() < deadline, info
        time.sleep(0.01)
    return info


def test_the_queue_is_bounded(tmp_path: Path) -> None:
    m = JobManager(max_active=2, state_dir=tmp_path)
    gate = __import__("threading").Event()
    m.submit("eval", {}, lambda p: gate.wait(5) and {})
    m.submit("eval", {}, lambda p: {})
    with pytest.raises(Busy) as e:
        m.submit("eval", {}, lambda p: {})
    assert e.value.status_code == 429 and e.value.retry_after > 0
    gate.set()
    m.shutdown()


def test_jobs_survive_a_restart_as_interrupted_with_their_command(tmp_path: Path) -> None:
    m = JobManager(state_dir=tmp_path)
    gate = __import__("threading").Event()

    def long(p: Progress) -> dict[str, Any]:
        p(1, 10, "working")
        gate.wait(5)
        return {}

    done = m.submit("eval", {"n": 0}, lambda p: {"ok": 1})
    wait(m, done.id, "done")
    running = m.submit("reindex", {}, long, resume="tunestack reindex kb --embedder e")
    queued = m.submit("eval", {}, lambda p: {}, resume="tunestack embed eval --dataset d")
    wait(m, running.id, "running")
    # the process dies here (kill -9): a new manager reads the same folder
    again = JobManager(state_dir=tmp_path)
    assert again.get(done.id)["status"] == "done"
    for job, cmd in ((running, "tunestack reindex kb"), (queued, "tunestack embed eval")):
        info = again.get(job.id)
        assert info["status"] == "interrupted" and cmd in info["error"]["hint"]
    gate.set()
    m.shutdown()


def test_shutdown_starts_no_queued_job(tmp_path: Path) -> None:
    m = JobManager(state_dir=tmp_path)
    gate = __import__("threading").Event()
    ran: list[str] = []
    first = m.submit("eval", {}, lambda p: gate.wait(5) and {})
    second = m.submit("eval", {}, lambda p: ran.append("second") or {})
    wait(m, first.id, "running")
    m.shutdown()
    gate.set()
    time.sleep(0.3)
    assert ran == [] and m.get(second.id)["status"] == "interrupted"
    with pytest.raises(Busy):
        m.submit("eval", {}, lambda p: {})


def test_job_endpoints_answer_429_when_the_queue_is_full(tmp_path: Path) -> None:
    app = create_app(settings(tmp_path, max_jobs=1))
    gate = __import__("threading").Event()
    app.state.tunestack_jobs.submit("eval", {}, lambda p: gate.wait(5) and {})
    c = TestClient(app, base_url=LOCAL, raise_server_exceptions=False)
    # an eval job's inputs are checked first; a reindex of a missing collection would 404,
    # so fill the queue and ask for a deploy's queue slot via the manager's own refusal
    with pytest.raises(Busy):
        app.state.tunestack_jobs.submit("eval", {}, lambda p: {})
    gate.set()
    assert c.get("/v1/jobs").json()["jobs"][0]["status"] in ("running", "done")


# ---- 10. deploys persist ---------------------------------------------------------------------


def test_an_ollama_deploy_survives_an_api_restart(tmp_path: Path) -> None:
    """compose: the API's default server is http://llm:8080/v1, a deploy to Ollama switches
    it to http://ollama:8080/v1; the old check compared the record with the default URL
    and silently went back to the base model after a restart."""
    s = settings(tmp_path, llm_base_url="http://llm:8080/v1", ollama_host="http://ollama:8080")
    path = deployment_path(s.home_dir)
    path.parent.mkdir(parents=True)
    record = {
        "base_url": "http://ollama:8080/v1",
        "model": "lumen-tuned",
        "configured": "http://llm:8080/v1",
    }
    path.write_text(json.dumps(record))
    t = RagContext.from_settings(s).llm.target
    assert (t.base_url, t.model) == ("http://ollama:8080/v1", "lumen-tuned")
    # a record pointing at a server that is not configured any more is not followed
    path.write_text(json.dumps({**record, "base_url": "http://gone:1/v1"}))
    t = RagContext.from_settings(s).llm.target
    assert (t.base_url, t.model) == ("http://llm:8080/v1", s.default_llm)


def test_the_ui_and_other_surfaces_get_whoami_open_on_loopback(tmp_path: Path) -> None:
    me = client(settings(tmp_path)).get("/v1/whoami").json()
    assert (me["id"], me["role"], me["auth"]) == ("open", "admin", False)


# ---- 5. names in requests never download ------------------------------------------------------


def test_a_hub_name_in_a_request_is_404_with_the_command_and_downloads_nothing(
    tmp_path: Path,
) -> None:
    c = client(settings(tmp_path, hf_hub_offline=False))
    body = {"model": "BAAI/bge-small-en-v1.5", "input": ["hello"]}
    r = c.post("/v1/embeddings", json=body)
    err = is_error(r, 404, "NotFound")
    assert "tunestack models pull BAAI/bge-small-en-v1.5" in err["hint"]
    assert not (tmp_path / "models" / "embedder" / "BAAI").exists()
    assert not any((tmp_path / "models").rglob("*bge*"))
