"""Hostile inputs over HTTP, with an admin key: an upload of 10,000 tiny files, and path
tricks in every field that names something (collections, uploaded file names, models,
datasets, reports, artifact files). Each trick must be refused with a 4xx in the one error
shape or, for an uploaded file name, be reduced to a plain name inside the home; nothing
may be written outside the API's TUNESTACK_HOME."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.conftest import ROOT
from tests.integration.conftest import Stack
from tests.reliability.conftest import HIGH_LIMITS, Api, api_process

MARK = "rel-evil"  # every trick's target name contains it: easy to look for afterwards
TRAVERSALS = [
    f"../{MARK}",
    f"../../{MARK}",
    f"../../../../../../tmp/{MARK}",
    f"/tmp/{MARK}",
    f"..\\..\\{MARK}",
    f"....//{MARK}",
    f"%2e%2e%2f{MARK}",
    f"{MARK}/../../x",
    f"{MARK}\x00.md",
    "..",
    ".",
    "",
]
# as a path segment these are URL syntax (the client resolves them), not a name
URL_SYNTAX = {"..", ".", ""}


@pytest.fixture(scope="module")
def api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    home = tmp_path_factory.mktemp("hostile") / "home"
    with api_process(stack, home, **HIGH_LIMITS) as api:
        yield api


def outside_marks(api: Api) -> list[Path]:
    """Files named after MARK anywhere near the home but not in it: its parent folders up
    to /tmp, the filesystem root, /etc and the repository the API runs in."""
    home = api.home.resolve()
    places = [home.parent, home.parent.parent, Path("/tmp"), Path("/"), Path("/etc"), ROOT]
    found = [p for d in places if d.is_dir() for p in d.glob(f"*{MARK}*")]
    found += [p for p in home.parent.rglob(f"*{MARK}*") if not p.is_relative_to(home)]
    return sorted(set(found))


def assert_refused(r: httpx.Response, *codes: int) -> None:
    assert 400 <= r.status_code < 500 and (not codes or r.status_code in codes), (
        r.request.method,
        r.request.url,
        r.status_code,
        r.text,
    )
    body = r.json()
    assert {"error", "message", "hint"} <= set(body) and "Traceback" not in r.text, body
    assert str(Path("/tmp/pytest-of")) not in r.text, "a server path in the answer"


def test_ten_thousand_tiny_files_in_one_upload(
    api: Api, figures: Callable[[str, Any], None]
) -> None:
    files = [("files", (f"tiny-{i:05d}.txt", f"note {i}".encode())) for i in range(10_000)]
    t0 = time.monotonic()
    with api.client(timeout=120) as c:
        r = c.post("/v1/ingest", data={"collection": "rel-tiny"}, files=files)
        took = time.monotonic() - t0
        assert r.status_code == 400, r.text[:500]
        body = r.json()
        assert body["error"] == "BadRequest" and "1000" in body["message"], body
        assert "tunestack ingest" in body["hint"]
        assert c.get("/readyz").status_code == 200
        names = [col["name"] for col in c.get("/v1/collections").json()["collections"]]
    assert took < 30, f"{took:.1f} s to refuse 10k files"
    assert "rel-tiny" not in names
    assert not (api.home / "uploads" / "rel-tiny").exists()
    figures(
        "hostile-10k",
        {"status": r.status_code, "message": body["message"], "seconds": round(took, 2)},
    )


def test_collection_names_with_path_tricks_are_refused(api: Api) -> None:
    with api.client() as c:
        for name in TRAVERSALS:
            r = c.post(
                "/v1/ingest", data={"collection": name}, files=[("files", ("a.md", b"# a\n\ntext"))]
            )
            assert_refused(r, 422)
            r = c.post("/v1/retrieve", json={"collection": name, "query": "x"})
            assert_refused(r, 404, 422)
            r = c.post(
                "/v1/jobs/reindex", json={"collection": name, "embedder": "all-minilm-l6-v2"}
            )
            assert_refused(r, 404, 422)
            r = c.post(
                "/v1/chat/completions",
                json={
                    "model": f"rag/{name}",
                    "max_tokens": 4,
                    "messages": [{"role": "user", "content": "x"}],
                },
            )
            assert_refused(r, 404, 422)
            if name in URL_SYNTAX:
                continue
            path = f"/v1/collections/{quote(name, safe='')}"
            assert_refused(c.delete(httpx.URL(path)), 404, 405, 422)
            assert_refused(c.post(httpx.URL(f"{path}/reindex"), json={"embedder": "x"}))
    assert outside_marks(api) == []


def test_uploaded_file_names_stay_inside_the_home(api: Api) -> None:
    tricks = [
        f"../../{MARK}-1.md",
        f"../../../../../../../tmp/{MARK}-2.md",
        f"/etc/{MARK}-3.md",
        f"..\\..\\{MARK}-4.md",
        f"....//....//{MARK}-5.md",
        f".{MARK}-6.md",
        f"{MARK}-7\x00.md",
        "../../etc/passwd",
    ]
    files = [("files", (n, f"# Note {i}\n\nA tricky name.".encode())) for i, n in enumerate(tricks)]
    with api.client() as c:
        r = c.post("/v1/ingest", data={"collection": "rel-names"}, files=files)
    assert r.status_code == 200, r.text
    paths = [f["path"] for f in r.json()["files"]]
    assert all("/" not in p and "\\" not in p and not p.startswith(".") for p in paths), paths
    stored = sorted(p.name for p in (api.home / "uploads" / "rel-names").iterdir())
    assert all(MARK in n or n == "passwd" for n in stored), stored
    assert outside_marks(api) == []
    with api.client() as c:
        r = c.post(
            "/v1/datasets",
            files={"file": (f"../../{MARK}.json", json.dumps({"queries": {}, "corpus": {}}))},
        )
    # an empty dataset is refused; a valid one would be stored as datasets/uploads/<plain name>
    assert r.status_code in (201, 422), r.text
    assert outside_marks(api) == []


def test_model_report_and_dataset_names_with_path_tricks_are_refused(api: Api) -> None:
    names = [*TRAVERSALS, "all-minilm-l6-v2/../../keys.json", f"a/{MARK}"]
    with api.client() as c:
        for name in names:
            enc = quote(name, safe="")
            for path in (
                ()
                if name in URL_SYNTAX
                else (
                    f"/v1/registry/models/embedder/{enc}",
                    f"/v1/registry/models/llm/{enc}",
                    f"/v1/registry/models/embedder/all-minilm-l6-v2/files/{enc}",
                    f"/v1/reports/{enc}",
                    f"/v1/reports/{enc}/files/report.json",
                    f"/v1/jobs/{enc}",
                )
            ):
                assert_refused(c.get(httpx.URL(path)), 404, 405, 422)
            if name not in URL_SYNTAX:
                r = c.post(httpx.URL(f"/v1/registry/models/llm/{enc}/deploy"), json={})
                assert_refused(r, 404, 405, 422)
            assert_refused(c.post("/v1/embeddings", json={"model": name, "input": "x"}), 404, 422)
            assert_refused(
                c.post("/v1/retrieve", json={"collection": "x", "query": "x", "embedder": name}),
                404,
                422,
            )
            assert_refused(
                c.post("/v1/jobs/eval", json={"dataset": name, "models": ["all-minilm-l6-v2"]}),
                404,
                422,
            )
            assert_refused(
                c.post("/v1/jobs/eval", json={"dataset": "x.json", "models": [name]}), 404, 422
            )
            assert_refused(
                c.post("/v1/jobs/reindex", json={"collection": "x", "embedder": name}), 404, 422
            )
            if name:  # "" is "the current server" (as null)
                r = c.post("/v1/admin/llm", json={"model": "x", "base_url": name, "verify": False})
                assert_refused(r, 404, 409, 422)
        r = c.get("/v1/reports/x/files/..%2F..%2Fkeys.json")
        assert_refused(r, 404, 422)
        assert "tsk_" not in r.text
    assert outside_marks(api) == []
