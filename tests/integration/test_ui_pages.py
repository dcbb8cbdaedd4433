"""Each UI page's logic under Streamlit's AppTest, against the real API of the session
stack (real Chroma, llama.cpp server, uvicorn). The browser test (test_ui_browser.py)
covers what AppTest cannot drive: file uploads and the rendered page."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from services.ui.logic import human_size, safe_markdown
from tests.conftest import ROOT, SAMPLES, free_port
from tests.integration.conftest import Stack
from tests.integration.converter_fixtures import QUANTS
from tests.integration.ui_fixtures import DegradedApi, UiData, fill_synthetic, ingest

APP = str(ROOT / "services" / "ui" / "app.py")


@pytest.fixture
def ui_env(stack: Stack) -> Iterator[dict[str, str]]:
    """Point the UI at the stack; restore the environment afterwards."""
    names = ("TUNESTACK_API_URL", "TUNESTACK_UI_API_URL", "TUNESTACK_API_KEY")
    old = {n: os.environ.get(n) for n in names}
    os.environ["TUNESTACK_API_URL"] = stack.api
    os.environ.pop("TUNESTACK_UI_API_URL", None)  # the deprecated name
    os.environ.pop("TUNESTACK_API_KEY", None)
    yield os.environ  # type: ignore[misc]
    for n, v in old.items():
        if v is None:
            os.environ.pop(n, None)
        else:
            os.environ[n] = v


def page(name: str | None = None, timeout: float = 120) -> AppTest:
    """The app, run once, switched to a page (the default page is Chat).

    AppTest's switch_page runs the page script on its own (not through app.py's
    st.navigation), so the banner is checked on the default page.
    """
    at = AppTest.from_file(APP, default_timeout=timeout).run()
    if name:
        at.switch_page(f"views/{name}.py").run()
    assert not at.exception, at.exception
    return at


def texts(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown) + "\n".join(c.value for c in at.caption)


# ---- Chat ---------------------------------------------------------------------------


def test_chat_streams_answer_with_citation_cards_and_keeps_history(
    ui_env: None, ui_data: UiData
) -> None:
    at = page()
    # at.sidebar after every run: a Block taken before run() shows the old page
    at.sidebar.selectbox(key="collection").set_value(ui_data.collection).run()
    embedders = set(at.sidebar.selectbox(key="embedder").options)
    assert embedders == {"all-minilm-l6-v2", ui_data.tuned}
    assert at.sidebar.selectbox(key="llm").options[0] == "smollm2-135m-instruct"
    at.sidebar.number_input(key="max_tokens").set_value(48).run()
    at.chat_input[0].set_value("How long is the warranty?").run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    msgs = at.chat_message
    assert [m.name for m in msgs] == ["user", "assistant"]
    answer = msgs[1].markdown[0].value
    assert answer.strip()
    cards = [e for e in at.expander if e.label.startswith("[")]
    assert cards and cards[0].label.startswith("[1] ")
    assert "score 0." in cards[0].label and ".md" in cards[0].label
    assert cards[0].markdown[0].value.strip()  # the chunk text inside the card
    assert any(safe_markdown(c.value) == answer for c in at.code)  # the copy-able answer

    at.run()  # any rerun (another widget, a page switch) keeps the conversation
    assert [m.name for m in at.chat_message] == ["user", "assistant"]
    at.sidebar.button(key="clear").click().run()
    assert not at.chat_message


def test_chat_with_tuned_embedder_and_bm25(ui_env: None, ui_data: UiData) -> None:
    at = page()
    at.sidebar.selectbox(key="collection").set_value(ui_data.collection).run()
    at.sidebar.selectbox(key="embedder").set_value(ui_data.tuned).run()
    at.sidebar.selectbox(key="mode").set_value("hybrid").run()
    at.sidebar.slider(key="top_k").set_value(2)
    at.sidebar.number_input(key="max_tokens").set_value(8).run()
    at.chat_input[0].set_value("What does the LO-200 cost?").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert [e for e in at.expander if e.label.startswith("[1]")]


def test_banner_names_what_is_down_and_how_to_start_it(
    ui_env: dict[str, str], degraded_api: DegradedApi
) -> None:
    ui_env["TUNESTACK_API_URL"] = degraded_api.url
    ui_env["TUNESTACK_API_KEY"] = degraded_api.key  # the UI's own: never sent for anyone
    at = page()
    assert at.text_input(key="login_key") and not at.error  # each person signs in
    at.text_input(key="login_key").input(degraded_api.key)
    at.button(key="login_submit").click().run()
    errors = [e.value for e in at.error]
    assert any("Chroma" in e and "tunestack up" in e for e in errors), errors
    assert any("LLM server is down" in e and "tunestack up" in e for e in errors), errors
    assert not at.chat_input  # nothing to chat with
    at.switch_page("views/models.py").run()  # the registry still works without Chroma
    assert not at.exception
    assert any("Collections are unknown" in w.value for w in at.warning)

    at = page()
    at.text_input(key="login_key").input("wrong-" + degraded_api.key)
    at.button(key="login_submit").click().run()
    assert any("not accepted" in e.value for e in at.error)

    ui_env["TUNESTACK_API_URL"] = f"http://127.0.0.1:{free_port()}"
    at = page()
    assert len(at.error) == 1 and "RAG API is down" in at.error[0].value
    assert "tunestack up" in at.error[0].value and not at.title


# ---- Compare ------------------------------------------------------------------------


def test_compare_two_ranked_columns_with_movement_and_highlight(
    ui_env: None, ui_data: UiData
) -> None:
    at = page("compare")
    at.selectbox(key="cmp_collection").set_value(ui_data.collection).run()
    assert at.selectbox(key="cmp_left").value == "all-minilm-l6-v2"
    assert at.selectbox(key="cmp_right").value == ui_data.tuned
    at.text_input(key="cmp_query").set_value("How long is the warranty on the lamp?")
    at.number_input(key="cmp_k").set_value(5)
    at.button[0].click().run()  # the form's submit button
    assert not at.exception and not at.error, [e.value for e in at.error]
    columns = [m.value for m in at.markdown if 'class="ts-column"' in m.value]
    assert len(columns) == 2
    left, right = columns
    assert left.count('class="ts-hit"') == 5 and right.count('class="ts-hit"') == 5
    assert "ts-move" not in left and right.count("ts-move") == 5
    assert any(a in right for a in ("▲", "▼", "=", "new"))
    assert "background:#" in left  # a chunk found by both is coloured the same

    hl = at.selectbox(key="cmp_highlight")
    chunk = hl.options[1]  # the left column's first chunk
    hl.set_value(chunk).run()
    columns = [m.value for m in at.markdown if 'class="ts-column"' in m.value]
    assert columns[0].count("3px solid") == 1

    at.selectbox(key="cmp_extra").set_value("bm25").run()
    at.button[0].click().run()
    columns = [m.value for m in at.markdown if 'class="ts-column"' in m.value]
    assert len(columns) == 3 and columns[2].count('class="ts-hit"') >= 1


def test_compare_offers_to_build_the_missing_embedder(ui_env: None, ui_data: UiData) -> None:
    ingest(httpx_api(), "ui-one", [SAMPLES / "corpus" / "shipping_returns.html"])
    try:
        at = page("compare")
        at.selectbox(key="cmp_collection").set_value("ui-one").run()
        assert any("built for all-minilm-l6-v2 only" in i.value for i in at.info)
        at.selectbox(key="cmp_reindex_to").set_value(ui_data.tuned)
        at.button(key="cmp_reindex").click().run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert at.selectbox(key="cmp_right").options == ["all-minilm-l6-v2", ui_data.tuned]
        assert not any("only" in i.value for i in at.info)
    finally:
        httpx.delete(f"{httpx_api()}/v1/collections/ui-one", timeout=30)


def httpx_api() -> str:
    return os.environ["TUNESTACK_API_URL"]


# ---- Evaluate -----------------------------------------------------------------------


def test_evaluate_runs_a_job_and_shows_table_chart_and_history(
    ui_env: None, ui_data: UiData
) -> None:
    at = page("evaluate")
    assert at.selectbox(key="eval_dataset").value == ui_data.dataset or ui_data.dataset in (
        at.selectbox(key="eval_dataset").options
    )
    at.selectbox(key="eval_dataset").set_value(ui_data.dataset)
    # the default: the serving embedder first, then tuned ones (other tests register more)
    assert at.multiselect(key="eval_models").value[0] == "all-minilm-l6-v2"
    at.multiselect(key="eval_models").set_value(["all-minilm-l6-v2", ui_data.tuned]).run()
    at.button(key="eval_run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    status = [s for s in at.status if "Evaluating" in s.label]
    assert status and status[0].label.endswith(": done")
    frames = [d.value for d in at.dataframe]
    metrics = next(f for f in frames if "mrr@10" in f.columns)
    assert list(metrics.index) == ["all-minilm-l6-v2", ui_data.tuned]
    assert at.get("vega_lite_chart")  # the bar chart
    assert at.metric and "error" in at.metric[0].label
    opened = at.selectbox(key="eval_report").value
    history = next(f for f in frames if "report" in f.columns)
    assert history["report"].iloc[0] == opened  # newest first, and opened


def test_evaluate_upload_dataset_is_checked_by_the_api(ui_env: None) -> None:
    at = page("evaluate")
    at.radio(key="eval_source").set_value("Upload").run()
    assert not at.exception
    assert not [b for b in at.button if b.key == "eval_upload_btn"]  # no file, no button
    qa = {
        "queries": {"q1": "How long is the warranty?", "q2": "Is shipping free?"},
        "corpus": {"d1": "The warranty lasts two years.", "d2": "Shipping is free."},
        "relevant_docs": {"q1": ["d1"], "q2": ["d2"]},
    }
    at.file_uploader(key="eval_upload").set_value(
        (
            "bad-qa.json",
            json.dumps({**qa, "relevant_docs": {"q1": ["d9"]}}).encode(),
            "application/json",
        )
    ).run()
    at.button(key="eval_upload_btn").click().run()
    assert not at.exception
    assert any("bad-qa.json was not accepted" in e.value and "d9" in e.value for e in at.error)
    at.file_uploader(key="eval_upload").set_value(
        ("ui-upload-qa.json", json.dumps(qa).encode(), "application/json")
    ).run()
    at.button(key="eval_upload_btn").click().run()
    assert not at.error, [e.value for e in at.error]
    assert any("2 queries over 2 passages" in s.value for s in at.success)
    assert any("uploads/ui-upload-qa.json" in c.value for c in at.caption)
    at.button(key="eval_run").click().run()  # and it evaluates
    assert at.status and at.status[0].label.endswith(": done"), [e.value for e in at.error]


def test_evaluate_rag_tab_runs_a_job_and_drills_into_an_answer(
    stack: Stack, ui_env: None, ui_data: UiData
) -> None:
    """The RAG tab: one question through the API job, then the grid, the heatmap and the
    drill-down with the cited chunk and the gold answer marked (all text inert)."""
    name = "rag/ui-questions.jsonl"
    path = stack.home / "datasets" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "question": "How much does the LO-200 Path Light cost?",
        "answer": "49 EUR",
        "source": "product_catalog.md",
    }
    path.write_text(json.dumps(record) + "\n")
    at = page("evaluate")
    assert [t.label for t in at.tabs] == ["Embedders", "RAG"]
    at.selectbox(key="rag_dataset").set_value(name)
    at.selectbox(key="rag_collection").set_value(ui_data.collection).run()
    assert at.multiselect(key="rag_llms").value == ["smollm2-135m-instruct"]
    assert at.multiselect(key="rag_embedders").value == ["all-minilm-l6-v2"]
    at.number_input(key="rag_limit").set_value(1)
    at.number_input(key="rag_k").set_value(2)
    at.number_input(key="rag_max_tokens").set_value(32).run()
    at.button(key="rag_run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any(s.label.endswith(": done") for s in at.status if "Answering" in s.label)
    opened = at.selectbox(key="rag_report").value
    assert opened.startswith("rag-eval-") and "ui-questions" in opened
    grid = next(d.value for d in at.dataframe if "llm" in d.value.columns)
    assert list(grid["llm"]) == ["smollm2-135m-instruct"] and "f1" in grid.columns
    assert at.image  # the heatmap
    assert at.selectbox(key="rag_question").options[0].startswith("q1: How much")
    cards = [m.value for m in at.markdown if "ts-rag-chunk" in m.value]
    assert cards and any("<mark>49 EUR</mark>" in c for c in cards), cards
    # the embedder history lists no RAG report, and the RAG history no embedder report
    embed_history = [s for s in at.selectbox if s.key == "eval_report"]
    assert all(opened not in s.options for s in embed_history)


# ---- Models -------------------------------------------------------------------------


def test_models_shows_runs_curves_exports_and_embedders(
    stack: Stack, ui_env: None, ui_data: UiData
) -> None:
    """The Models page shows what the registry records of the real run and its export
    (four GGUF types with their gates) and of the tuned embedder."""
    record = stack.registry.llm(ui_data.llm_run).record
    assert record.export is not None
    files = record.export.files
    at = page("models")
    assert not at.error, [e.value for e in at.error]
    assert "smollm2-135m-instruct" in at.caption[0].value  # serving now
    runs = at.dataframe[0].value
    row = runs[runs["run"] == ui_data.llm_run].iloc[0]
    assert row["train loss"] == record.metrics["train"]["train_loss"]
    assert row["eval loss"] == record.metrics["eval"]["eval_loss"]
    assert row["exports"] == len(files) == len(QUANTS)
    at.selectbox(key="models_llm").set_value(ui_data.llm_run).run()
    assert len(at.image) >= 2  # training_loss.png + training_eval_loss.png
    frames = [d.value for d in at.dataframe]
    assert any("train.train_loss" in list(f.get("metric", [])) for f in frames)
    exports = next(f for f in frames if "stopped" in f.columns)
    assert list(exports["name"]) == list(QUANTS)
    assert list(exports["size"]) == [human_size(files[q].size) for q in QUANTS]
    assert list(exports["stopped"]) == [
        f"{files[q].stop_check.stopped}/{files[q].stop_check.prompts}" for q in QUANTS
    ]
    parity = next(f for f in frames if "top1_agreement" in f.columns)
    assert list(parity["top1_agreement"]) == [files[q].parity.top1_agreement for q in QUANTS]
    # deploy to Ollama is a job; llama.cpp's CLI command is shown beside the button
    assert any("tunestack llm deploy" in c.value for c in at.caption)
    assert at.selectbox(key=f"dq-{ui_data.llm_run}").options == list(QUANTS)
    assert at.selectbox(key=f"dq-{ui_data.llm_run}").value == "q8_0"
    # with its Modelfile moved aside the export is refused before a job is queued (with
    # the Modelfile there, the click would queue a real deploy to this machine's Ollama)
    modelfile = stack.registry.entry_dir("llm", ui_data.llm_run) / "Modelfile"
    aside = modelfile.with_name(".Modelfile.aside")
    modelfile.rename(aside)
    try:
        at.button(key=f"deploy-{ui_data.llm_run}").click().run()
    finally:
        aside.rename(modelfile)
    assert not at.exception, at.exception
    assert any(
        f"Modelfile of '{ui_data.llm_run}' is missing" in e.value
        and "tunestack llm export" in e.value
        for e in at.error
    ), [e.value for e in at.error]

    tuned = stack.registry.embedder(ui_data.tuned).record
    at.selectbox(key="models_emb").set_value(ui_data.tuned).run()
    embs = next(d.value for d in at.dataframe if "embedder" in d.value.columns)
    row = embs[embs["embedder"] == ui_data.tuned].iloc[0]
    assert ui_data.collection in row["collections"]
    assert row["validation MRR@10"] == tuned.metrics["validation"]["cosine_mrr@10"]
    assert row["fingerprint"] == tuned.fingerprint


# ---- Documents ----------------------------------------------------------------------


def test_documents_lists_reindexes_and_deletes_with_confirmation(
    ui_env: None, ui_data: UiData
) -> None:
    ingest(httpx_api(), "ui-del", [SAMPLES / "corpus" / "leave_policy.txt"])
    at = page("documents")
    assert not at.error, [e.value for e in at.error]
    overview = at.dataframe[0].value
    assert {ui_data.collection, "ui-del"} <= set(overview["collection"])

    at.selectbox(key="docs_reidx_c").set_value("ui-del").run()
    assert ui_data.tuned in at.selectbox(key="docs_reidx_e").options  # not yet built for it
    assert "all-minilm-l6-v2" not in at.selectbox(key="docs_reidx_e").options
    at.selectbox(key="docs_reidx_e").set_value(ui_data.tuned).run()
    at.button(key="docs_reindex").click().run()
    assert any("now built for" in s.value for s in at.success), [e.value for e in at.error]

    at.selectbox(key="docs_del_c").set_value("ui-del").run()
    assert at.button(key="docs_delete").disabled  # nothing typed yet
    at.text_input(key="docs_del_confirm").set_value("ui-de").run()
    assert at.button(key="docs_delete").disabled
    at.text_input(key="docs_del_confirm").set_value("ui-del").run()
    assert not at.button(key="docs_delete").disabled
    at.button(key="docs_delete").click().run()
    assert not at.exception
    assert any("Deleted 'ui-del'" in s.value for s in at.success), [
        e.value for e in [*at.error, *at.warning, *at.success]
    ]
    cols = httpx.get(f"{httpx_api()}/v1/collections", timeout=30).json()["collections"]
    assert "ui-del" not in {c["name"] for c in cols}


def test_documents_upload_shows_per_file_status(ui_env: None, ui_data: UiData) -> None:
    at = page("documents")
    at.selectbox(key="docs_collection").set_value("New collection…").run()
    at.text_input(key="docs_new_name").set_value("ui-upload").run()
    assert at.button(key="docs_ingest").disabled  # no files yet
    good = SAMPLES / "corpus" / "product_faq.md"
    files = [
        (good.name, good.read_bytes(), "text/markdown"),
        ("broken.pdf", b"%PDF-1.4 this is not really a pdf", "application/pdf"),
    ]
    try:
        at.file_uploader(key="docs_files_0").set_value(files).run()
        at.button(key="docs_ingest").click().run()
        assert not at.exception
        assert any("1 of 2 file(s) ingested" in w.value for w in at.warning)
        report = at.dataframe[-1].value
        status = dict(zip(report["file"], report["status"], strict=True))
        assert status == {good.name: "ok", "broken.pdf": "failed"}
        assert report[report["file"] == "broken.pdf"]["reason"].iloc[0]  # says why
        assert "ui-upload" in set(at.dataframe[0].value["collection"])  # the overview

        at.file_uploader(key="docs_files_1").set_value([files[0]]).run()  # emptied, new key
        at.selectbox(key="docs_collection").set_value("ui-upload").run()
        at.button(key="docs_ingest").click().run()
        report = at.dataframe[-1].value
        assert list(report["status"]) == ["unchanged"]
    finally:
        httpx.delete(f"{httpx_api()}/v1/collections/ui-upload", timeout=30)


# ---- 10k chunks -------------------------------------------------------------------------


@pytest.mark.slow
def test_pages_load_under_two_seconds_at_10k_chunks(stack: Stack, ui_env: None) -> None:
    """Each page's Streamlit run (API calls, tables, charts) with a 10k-chunk collection.

    bench/ui_pages.py measures the same in a browser too; this guards the budget."""
    fill_synthetic(stack.settings.chroma_url, stack.registry, "ui-10k", 10_000)
    times = {}
    for name in ("chat", "compare", "evaluate", "models", "documents"):
        at = AppTest.from_file(APP, default_timeout=60)
        at.query_params["collection"] = "ui-10k"
        at.run()  # warm: imports, client pool
        at = AppTest.from_file(APP, default_timeout=60)
        at.query_params["collection"] = "ui-10k"
        t = time.perf_counter()
        at.run()
        if name != "chat":
            at.switch_page(f"views/{name}.py").run()
        times[name] = time.perf_counter() - t
        assert not at.exception and not at.error, (name, [e.value for e in at.error])
    assert max(times.values()) < 2.0, times
