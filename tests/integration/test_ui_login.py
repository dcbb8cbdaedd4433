"""Signing in to the UI, under Streamlit's AppTest, against real API processes with keys
(`tunestack keys` records in their own TUNESTACK_HOME) and one without any.

The APIs need no Chroma or LLM for this (they point at dead ports, so the pages show the
"down" banner): only /v1/whoami, /readyz and the guard in front of them are exercised.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from streamlit.proto.TextInput_pb2 import TextInput as TextInputProto
from streamlit.testing.v1 import AppTest

from services.common.api_schemas import WhoAmI
from services.common.auth import KeyStore
from services.ui.components import AUTH
from tests.conftest import ROOT, free_port
from tests.integration.conftest import stop_api

APP = str(ROOT / "services" / "ui" / "app.py")
ENV_KEY = "ui-process-key-" + "x" * 16  # the UI process's own key: must never be used


@dataclass
class Api:
    url: str
    user_key: str = ""
    admin_key: str = ""


def start_api(home: Path, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    full = {
        **os.environ,
        "TUNESTACK_HOME": str(home),
        "TUNESTACK_RAG_PORT": str(port),
        "TUNESTACK_RAG_WARM_EMBEDDER": "false",
        "TUNESTACK_CHROMA_URL": f"http://127.0.0.1:{free_port()}",
        "TUNESTACK_RAG_LLM_BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
        **env,
    }
    if "TUNESTACK_API_KEY" not in env:
        full.pop("TUNESTACK_API_KEY", None)
    log = (home / "api.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.rag_api"], env=full, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"API did not start: {(home / 'api.log').read_text()}")


@pytest.fixture(scope="module")
def keyed_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    home = tmp_path_factory.mktemp("ui-login-home")
    keys = KeyStore(home)
    _, user = keys.create("alice *the* [user](x)", "user")
    _, admin = keys.create("root", "admin")
    proc, url = start_api(home, TUNESTACK_API_KEY=ENV_KEY)
    try:
        yield Api(url, user, admin)
    finally:
        stop_api(proc)


@pytest.fixture(scope="module")
def open_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    proc, url = start_api(tmp_path_factory.mktemp("ui-open-home"))
    try:
        yield Api(url)
    finally:
        stop_api(proc)


@pytest.fixture
def ui_at(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The UI process has an admin key in its environment: it must not be what it sends."""
    monkeypatch.delenv("TUNESTACK_UI_API_URL", raising=False)
    monkeypatch.setenv("TUNESTACK_API_KEY", ENV_KEY)
    yield


def app(url: str, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("TUNESTACK_API_URL", url)
    return AppTest.from_file(APP, default_timeout=60).run()


def sign_in(at: AppTest, key: str) -> AppTest:
    at.text_input(key="login_key").input(key)
    return at.button(key="login_submit").click().run()


def sidebar_text(at: AppTest) -> str:
    return "\n".join(c.value for c in at.sidebar.caption)


def test_login_form_first_and_a_wrong_key_is_refused(
    keyed_api: Api, ui_at: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = app(keyed_api.url, monkeypatch)
    assert not at.exception, at.exception
    field = at.text_input(key="login_key")
    assert field.label == "API key" and field.proto.type == TextInputProto.PASSWORD
    assert not at.chat_input and not at.error  # no page, no banner before signing in
    at.switch_page("views/chat.py").run()  # a page's URL opened directly: still the form
    assert at.text_input(key="login_key") and not at.chat_input and not at.error

    sign_in(at, "tsk_00000000_" + "x" * 43)
    assert any("not accepted" in e.value for e in at.error), [e.value for e in at.error]
    sign_in(at, ENV_KEY + "-wrong")
    assert any("not accepted" in e.value for e in at.error)
    assert at.session_state[AUTH][1] is None


def test_user_sees_chat_and_compare_only_and_logs_out(
    keyed_api: Api, ui_at: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = sign_in(app(keyed_api.url, monkeypatch), keyed_api.user_key)
    assert not at.exception, at.exception
    # the name is shown as written, its Markdown inert
    assert "Signed in as **alice \\*the\\* \\[user\\](x)** (user)" in sidebar_text(at)
    assert at.session_state[AUTH][1] == keyed_api.user_key
    assert any("Chroma" in e.value for e in at.error)  # the pages run, with this key
    for page in ("evaluate", "models", "documents"):
        with pytest.raises(ValueError):  # not in the navigation
            at.switch_page(f"views/{page}.py")
    at.switch_page("views/compare.py").run()
    assert not at.exception and at.title[0].value == "Compare retrieval"

    at.sidebar.button(key="logout").click().run()
    assert at.text_input(key="login_key")  # back to the form
    assert AUTH not in at.session_state or at.session_state[AUTH][1] is None
    at.switch_page("views/compare.py").run()
    assert at.text_input(key="login_key") and not at.title[0].value.startswith("Compare")


def test_admin_pages_refuse_a_user_opened_directly(
    keyed_api: Api, ui_at: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user who types an admin page's URL: the page itself refuses."""
    monkeypatch.setenv("TUNESTACK_API_URL", keyed_api.url)
    for page in ("evaluate", "models", "documents"):
        at = AppTest.from_file(str(ROOT / "services" / "ui" / "views" / f"{page}.py"))
        who = WhoAmI(id="u", name="alice", role="user", auth=True)
        at.session_state[AUTH] = (keyed_api.url, keyed_api.user_key, who)
        at.run()
        assert not at.exception, at.exception
        assert [e.value for e in at.error] == [
            "This page needs an admin key: it changes documents, models or datasets."
        ]
        assert not at.title


def test_admin_sees_every_page(
    keyed_api: Api, ui_at: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = sign_in(app(keyed_api.url, monkeypatch), keyed_api.admin_key)
    assert "Signed in as **root** (admin)" in sidebar_text(at)
    at.switch_page("views/documents.py").run()
    assert not at.exception and at.title[0].value == "Documents"
    at.switch_page("views/evaluate.py").run()
    assert at.title[0].value == "Evaluate"


def test_no_login_when_the_api_has_no_keys(
    open_api: Api, ui_at: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = app(open_api.url, monkeypatch)
    assert not at.exception, at.exception
    assert not [t for t in at.text_input if t.key == "login_key"]
    assert "no keys" in sidebar_text(at) and not at.sidebar.button
    at.switch_page("views/models.py").run()
    assert at.title[0].value == "Models"
