"""The UI in a real browser: Debian's headless Chromium driven by Selenium through Debian's
chromedriver, against `python -m services.ui` and the session stack. Screenshots (at
1280x800) and page-load times go to test-artifacts/.

Chromium and chromedriver come from Debian (`apt-get install chromium chromium-driver`;
.ci/run installs them). Without them the module is skipped locally and fails in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT
from tests.integration.conftest import Stack
from tests.integration.ui_fixtures import UiData

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,800",
)
LOAD_TIMES: dict[str, float] = {}
ARTIFACTS = ROOT / "test-artifacts"  # the artifacts_dir fixture's folder, whatever the cwd


@pytest.fixture(scope="module")
def browser(artifacts_dir: Path) -> Iterator[Any]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        msg = (
            f"{' and '.join(missing)} not found: needs Debian's chromium and chromium-driver"
            " (apt-get install chromium chromium-driver)"
        )
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never try to download
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_window_size(1280, 800)
    try:
        yield driver
    finally:
        driver.quit()
        (artifacts_dir / "ui-page-load-seconds.json").write_text(
            json.dumps(LOAD_TIMES, indent=2) + "\n"
        )


def wait(driver: Any, cond: Callable[[Any], Any], timeout: float = 60, what: str = "") -> Any:
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:  # a Streamlit rerun can replace an element between finding and reading it
        return WebDriverWait(
            driver, timeout, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException]
        ).until(cond)
    except TimeoutException:
        shot = ARTIFACTS / f"ui-timeout-{uuid.uuid4().hex[:6]}.png"
        driver.save_screenshot(str(shot))
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what} (screenshot: {shot})"
        ) from None


def css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def open_page(driver: Any, url: str, title: str, name: str, ready: str) -> None:
    """Load a page; time it until its title and its `ready` element are drawn."""
    t0 = time.perf_counter()
    driver.get(url)
    wait(
        driver,
        lambda d: any(h.text == title for h in css(d, "h1")) and css(d, ready),
        timeout=60,
        what=f"the {title!r} page",
    )
    LOAD_TIMES[name] = round(time.perf_counter() - t0, 3)


def button(driver: Any, label: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.XPATH, f"//button[.//p[normalize-space()='{label}']]")


def test_chat_answers_with_a_citation(
    browser: Any, ui_server: str, ui_data: UiData, artifacts_dir: Path
) -> None:
    from selenium.webdriver.common.keys import Keys

    open_page(
        browser,
        f"{ui_server}/?collection={ui_data.collection}",
        "Chat with your documents",
        "chat",
        'textarea[data-testid="stChatInputTextArea"]',
    )
    box = css(browser, 'input[aria-label="Max answer tokens"]')[0]
    box.send_keys("32", Keys.TAB)
    wait(browser, lambda d: not css(d, '[data-testid="stStatusWidget"]'), what="the rerun")
    ask = css(browser, 'textarea[data-testid="stChatInputTextArea"]')[0]
    ask.send_keys("How long is the warranty?", Keys.ENTER)
    summaries = wait(
        browser,
        lambda d: [s for s in css(d, '[data-testid="stExpander"] summary') if "[1] " in s.text],
        timeout=240,
        what="an answer with a citation card",
    )
    messages = css(browser, '[data-testid="stChatMessage"]')
    assert len(messages) == 2 and "How long is the warranty?" in messages[0].text
    assert messages[1].text.strip() and "score 0." in summaries[0].text
    summaries[0].click()  # open the citation card
    wait(
        browser,
        lambda d: len(d.find_elements("css selector", '[data-testid="stExpanderDetails"]')) > 0,
    )
    browser.save_screenshot(str(artifacts_dir / "ui-chat.png"))


def test_compare_shows_two_ranked_columns(
    browser: Any, ui_server: str, ui_data: UiData, artifacts_dir: Path
) -> None:
    from selenium.webdriver.common.keys import Keys

    open_page(
        browser,
        f"{ui_server}/compare?collection={ui_data.collection}",
        "Compare retrieval",
        "compare",
        'input[aria-label="Query"]',
    )
    css(browser, 'input[aria-label="Query"]')[0].send_keys("How long is the warranty?", Keys.ENTER)

    def columns(d: Any) -> list[Any] | None:
        cols = css(d, ".ts-column")
        hits = [c.find_elements("css selector", ".ts-hit") for c in cols]
        return cols if len(cols) == 2 and all(hits) else None

    cols = wait(browser, columns, timeout=60, what="two ranked columns")
    left, right = (c.find_elements("css selector", ".ts-hit") for c in cols)
    assert len(left) == len(right) == 5
    assert not cols[0].find_elements("css selector", ".ts-move")
    assert len(cols[1].find_elements("css selector", ".ts-move")) == 5
    assert left[0].text.startswith("#1 ") and right[0].text.startswith("#1 ")
    browser.save_screenshot(str(artifacts_dir / "ui-compare.png"))


def test_upload_a_file_and_see_it_ingested(
    browser: Any, stack: Stack, ui_server: str, ui_data: UiData, artifacts_dir: Path, tmp_path: Path
) -> None:
    word = f"zebrafish{uuid.uuid4().hex[:8]}"
    doc = tmp_path / f"browser-upload-{word}.md"
    doc.write_text(f"# Aquarium policy\n\nThe {word} tank is cleaned every Tuesday.\n")
    collection = "ui-browser"  # a link to a new collection preselects "New collection"
    open_page(
        browser,
        f"{ui_server}/documents?collection={collection}",
        "Documents",
        "documents",
        'input[type="file"]',
    )
    css(browser, 'input[type="file"]')[0].send_keys(str(doc))
    wait(browser, lambda d: doc.name in d.page_source, what="the uploader to list the file")
    wait(browser, lambda d: button(d, "Ingest").is_enabled(), what="the Ingest button")
    button(browser, "Ingest").click()
    msg = wait(
        browser,
        lambda d: [e for e in css(d, '[data-testid="stAlert"]') if "file(s) ingested" in e.text],
        timeout=120,
        what="the ingest result",
    )
    assert f"'{collection}': 1 of 1 file(s) ingested." in msg[0].text
    browser.save_screenshot(str(artifacts_dir / "ui-documents.png"))
    hits = httpx.post(
        f"{stack.api}/v1/retrieve",
        json={"collection": collection, "query": word, "mode": "bm25", "top_k": 1},
        timeout=30,
    ).json()["hits"]
    assert hits and word in hits[0]["text"]
    httpx.delete(f"{stack.api}/v1/collections/{collection}", timeout=30)


def test_other_pages_render(browser: Any, ui_server: str, artifacts_dir: Path) -> None:
    pages = (
        ("evaluate", "Evaluate", '[data-testid="stMultiSelect"]'),
        ("models", "Models", '[data-testid="stImage"], [data-testid="stCaptionContainer"]'),
    )
    for path, title, ready in pages:
        open_page(browser, f"{ui_server}/{path}", title, path, ready)
        assert not css(browser, '[data-testid="stException"]')
        browser.save_screenshot(str(artifacts_dir / f"ui-{path}.png"))
