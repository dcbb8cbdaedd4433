"""UI page-load times against a running stack with a 10k-chunk collection (target < 2 s).

Starts the local stack (Chroma, llama.cpp server, RAG API, Streamlit UI) in a temp
TUNESTACK_HOME, fills collection "big" with 10k chunks upserted directly (sample-corpus
texts, random unit vectors; as bench/retrieve.py does, since embedding 10k chunks would
measure the embedder), then times every page two ways:

- script: one Streamlit run of the page under AppTest (the server-side work of a load:
  API calls, tables, charts), median of 3 after a warm-up;
- browser: headless Chromium at 1280x800, from navigation until the page's title and its
  main control are drawn (what a person waits for), median of 3 — when Debian's chromium
  and chromedriver are installed.

Then memory: resident and peak (VmRSS/VmHWM) of the Streamlit server (the UI container's
one process) and the RAG API after all loads, and this process's peak (the AppTest runs).

    .venv/bin/python bench/ui_pages.py [--chunks 10000] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _harness import ROOT, free_port, peak_rss_mb

sys.path.insert(0, str(ROOT))

from tests.integration.ui_fixtures import fill_synthetic

APP = str(ROOT / "services" / "ui" / "app.py")
PAGES = (  # page, title, element that says the page is usable
    ("chat", "Chat with your documents", 'textarea[data-testid="stChatInputTextArea"]'),
    ("compare", "Compare retrieval", 'input[aria-label="Query"]'),
    ("evaluate", "Evaluate embedders", '[data-testid="stMultiSelect"]'),
    ("models", "Models", '[data-testid="stDataFrame"]'),
    ("documents", "Documents", 'input[type="file"]'),
)


def script_times(api: str, runs: int) -> dict[str, float]:
    from streamlit.testing.v1 import AppTest

    os.environ["TUNESTACK_API_URL"] = api
    out = {}
    for page, _, _ in PAGES:
        samples = []
        for _ in range(runs + 1):
            at = AppTest.from_file(APP, default_timeout=120)
            at.query_params["collection"] = "big"
            t = time.perf_counter()
            at.run()
            if page != "chat":
                t = time.perf_counter()
                at.switch_page(f"views/{page}.py").run()
            samples.append(time.perf_counter() - t)
            assert not at.exception, at.exception
        out[page] = statistics.median(samples[1:])
    # a Compare query at 10k (base fetched 5x deeper for the movement arrows): the first one
    # after the API started (it loads the embedder then), and the median of the next runs
    samples = []
    for i in range(runs + 1):
        at = AppTest.from_file(APP, default_timeout=120)
        at.query_params["collection"] = "big"
        at.run()
        at.switch_page("views/compare.py").run()
        at.text_input(key="cmp_query").set_value(f"How long is the warranty? {i}")
        t = time.perf_counter()
        at.button[0].click().run()
        samples.append(time.perf_counter() - t)
        assert not at.exception and not at.error, (at.exception, at.error)
    out["compare query, first"] = samples[0]
    out["compare query"] = statistics.median(samples[1:])
    return out


def browser_times(ui: str, runs: int) -> dict[str, float]:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.integration.test_ui_browser import CHROMEDRIVER, CHROMIUM, FLAGS

    os.environ["SE_OFFLINE"] = "true"
    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:  # the browser test's: headless, no sandbox, no network, 1280x800
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    out = {}
    try:
        for page, title, ready in PAGES:
            path = "" if page == "chat" else page
            samples = []
            for _ in range(runs + 1):
                t = time.perf_counter()
                driver.get(f"{ui}/{path}?collection=big")
                WebDriverWait(  # a rerun can replace an element between find and read
                    driver,
                    60,
                    poll_frequency=0.05,
                    ignored_exceptions=[StaleElementReferenceException],
                ).until(
                    lambda d, title=title, ready=ready: (
                        any(h.text == title for h in d.find_elements(By.CSS_SELECTOR, "h1"))
                        and d.find_elements(By.CSS_SELECTOR, ready)
                    )
                )
                samples.append(time.perf_counter() - t)
            out[page] = statistics.median(samples[1:])
    finally:
        driver.quit()
    return out


def proc_mib(pid: int | None) -> tuple[float, float]:
    """(resident, peak) MiB of a live process, from /proc/PID/status."""
    if pid is None:
        return (float("nan"), float("nan"))
    kb = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, val = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            kb[key] = int(val.split()[0])
    return (kb["VmRSS"] / 1024, kb["VmHWM"] / 1024)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunks", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    from platform_cli.settings import StackSettings
    from platform_cli.stack import UpOptions
    from platform_cli.stack.local import LocalStack
    from services.common.registry import Registry

    with tempfile.TemporaryDirectory() as home:
        s = StackSettings(
            home=Path(home),
            api_port=free_port(),
            chroma_port=free_port(),
            llm_port=free_port(),
            ui_port=free_port(),
        )
        local = LocalStack(s)
        try:
            local.up(UpOptions(), lambda m: None)
            t = time.perf_counter()
            fill_synthetic(s.chroma_url, Registry(s.home_dir), "big", a.chunks)
            print(f"filled {a.chunks} chunks in {time.perf_counter() - t:.0f}s", file=sys.stderr)
            script = script_times(s.api_url, a.runs)
            have_browser = (
                Path("/usr/bin/chromium").exists() and Path("/usr/bin/chromedriver").exists()
            )
            browser = browser_times(s.ui_url, a.runs) if have_browser else {}
            pids = {st.name: st.details["pid"] for st in local.status()}
            mem = {name: proc_mib(pids.get(name)) for name in ("ui", "rag-api")}
        finally:
            local.down()
    print(f"\nUI page loads with a {a.chunks}-chunk collection (seconds, median of {a.runs})")
    print(f"{'page':21s} {'script':>7s} {'browser':>8s}")
    for page in [*(p for p, _, _ in PAGES), "compare query, first", "compare query"]:
        b = browser.get(page)
        print(f"{page:21s} {script[page]:7.2f} {'-' if b is None else f'{b:.2f}':>8s}")
    loads = [t for page, t in [*script.items(), *browser.items()] if "query" not in page]
    print(f"slowest page load: {max(loads):.2f} s (target < 2 s; queries are not loads)")
    print("memory after the loads (MiB): resident / peak")
    for name, (rss, hwm) in mem.items():
        print(f"  {name:8s} {rss:6.0f} / {hwm:.0f}")
    print(f"  bench process (AppTest runs) peak {peak_rss_mb():.0f}")


if __name__ == "__main__":
    main()
