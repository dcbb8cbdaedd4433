"""The Streamlit chat page (AppTest runs the real script against the running API)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT, SAMPLES, free_port
from tests.integration.conftest import Stack

APP = str(ROOT / "services" / "ui" / "app.py")


@pytest.fixture
def ui_env(stack: Stack) -> Iterator[None]:
    old = os.environ.get("TUNESTACK_UI_API_URL")
    os.environ["TUNESTACK_UI_API_URL"] = stack.api
    yield
    if old is None:
        os.environ.pop("TUNESTACK_UI_API_URL", None)
    else:
        os.environ["TUNESTACK_UI_API_URL"] = old


def test_chat_page_streams_answer_with_citations(stack: Stack, ui_env: None) -> None:
    files = [("files", (p.name, p.read_bytes())) for p in sorted((SAMPLES / "corpus").glob("*.md"))]
    r = httpx.post(f"{stack.api}/v1/ingest", data={"collection": "ui"}, files=files, timeout=600)
    assert r.status_code == 200
    at = AppTest.from_file(APP, default_timeout=180).run()
    assert not at.exception
    at.sidebar.selectbox(key="collection").set_value("ui").run()
    at.chat_input[0].set_value("How long is the warranty?").run()
    assert not at.exception, at.exception
    msgs = at.chat_message
    assert len(msgs) == 2 and msgs[0].name == "user" and msgs[1].name == "assistant"
    assert at.expander and at.expander[0].label.startswith("[1]")


def test_banner_when_api_down(ui_env: None) -> None:
    os.environ["TUNESTACK_UI_API_URL"] = f"http://127.0.0.1:{free_port()}"
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    assert at.error and "tunestack up" in at.error[0].value
