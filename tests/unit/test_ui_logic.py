"""UI helpers without a server: rank movement, colours, cards, tables; and the rule that
services/ui never imports model or vector-store code (it runs in a slim image)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from services.common.api_schemas import FileStatus, HitInfo, IngestResponse, JobInfo, ModelCard
from services.ui import logic
from tests.conftest import ROOT

HEAVY = (
    "torch",
    "sentence_transformers",
    "transformers",
    "chromadb",
    "services.rag_api",
    "services.embed_tuner",
    "services.trainer",
    "services.converter",
)
# The only shared modules the UI image needs (it copies services/common, has no torch).
UI_MAY_IMPORT = tuple(
    f"services.common.{m}" for m in ("api_client", "api_schemas", "settings", "errors")
)


def hit(id_: str, rank: int, text: str = "t", score: float = 0.5) -> HitInfo:
    return HitInfo(
        id=id_, rank=rank, text=text, score=score, file_name="a.md", source="a.md", chunk_index=0
    )


def test_movement_against_the_base_ranking() -> None:
    before = {"a": 1, "b": 2, "c": 5}
    assert logic.movement(1, before, "a") == "="
    assert logic.movement(1, before, "c") == "▲4"
    assert logic.movement(4, before, "b") == "▼2"
    assert logic.movement(1, before, "zz") == "new"
    assert logic.movement_color("▲4") != logic.movement_color("▼2")


def test_shared_chunks_get_one_colour_each_and_unique_ones_none() -> None:
    left = [hit("a", 1), hit("b", 2), hit("c", 3)]
    right = [hit("c", 1), hit("d", 2), hit("a", 3)]
    colors = logic.shared_colors([left, right])
    assert set(colors) == {"a", "c"} and colors["a"] != colors["c"]
    many = [[hit(str(i), i) for i in range(30)]] * 2
    assert len(logic.shared_colors(many)) == 30  # the palette cycles


def test_card_escapes_chunk_text_and_marks_highlight() -> None:
    evil = hit("x\"'", 1, text="<script>alert(1)</script> & more " + "w" * 400)
    card = logic.hit_card_html(evil, "▲2", "#fde68a", highlighted=True)
    assert "<script>" not in card and "&lt;script&gt;" in card
    assert 'data-chunk="x&quot;&#x27;"' in card
    assert "3px solid" in card and "▲2" in card and "…" in card
    plain = logic.hit_card_html(hit("y", 2), None, None, highlighted=False)
    assert "ts-move" not in plain and "3px solid" not in plain


def test_pick_pair_prefers_default_left_and_tuned_right() -> None:
    assert logic.pick_pair(["a", "base", "tuned"], "base", ["tuned"]) == ("base", "tuned")
    assert logic.pick_pair(["x", "y"], "base", []) == ("x", "y")
    assert logic.pick_pair(["only"], "base", []) == ("only", "only")
    assert logic.pick_pair([], "base", []) == ("", "")


def test_metric_and_chart_rows() -> None:
    models = {"base": {"hit@1": 0.5, "mrr@10": 0.6}, "tuned": {"hit@1": 0.7, "mrr@10": 0.8}}
    rows = logic.metric_rows(models, ("hit@1", "mrr@10", "ndcg@10"))
    assert rows == [
        {"model": "base", "hit@1": 0.5, "mrr@10": 0.6},
        {"model": "tuned", "hit@1": 0.7, "mrr@10": 0.8},
    ]
    chart = logic.chart_rows(models, ("hit@1", "ndcg@10"))
    assert chart == [
        {"model": "base", "metric": "hit@1", "value": 0.5},
        {"model": "tuned", "metric": "hit@1", "value": 0.7},
    ]


def test_small_formatters() -> None:
    assert logic.human_size(4096) == "4.0 KB" and logic.human_size(12) == "12 B"
    assert logic.human_size(3 * 2**30) == "3.0 GB" and logic.human_size(None) == "—"
    nested = {"train": {"loss": 1.5, "x": [1]}, "eval": {"predict": {"bleu": 2}}, "n": 3}
    assert logic.flat_metrics(nested) == {"train.loss": 1.5, "eval.predict.bleu": 2, "n": 3}
    served = [
        ModelCard(id="rag/kb", owned_by="tunestack-rag"),
        ModelCard(id="qwen", owned_by="llamacpp"),
        ModelCard(id="e", owned_by="tunestack-embedder"),
        ModelCard(id=None, owned_by="llamacpp"),  # a server's entry without an id
        ModelCard(id="smol", owned_by="llamacpp"),
    ]
    assert logic.llm_choices(served, "smol") == ["smol", "qwen"]
    assert logic.llm_choices(served, "") == ["qwen", "smol"]
    job = JobInfo(
        id="j1",
        kind="eval",
        status="running",
        done=3,
        total=10,
        progress=0.3,
        message="encoding",
        params={},
        created=0.0,
    )
    assert logic.job_text(job) == "encoding (3/10)"
    assert logic.job_text(job.model_copy(update={"total": 0})) == "encoding"
    report = IngestResponse(
        collection="kb",
        embedder="e",
        counts={"failed": 1},
        chunks_written=0,
        seconds=0.1,
        files=[FileStatus(path="a.md", status="failed", chunks=0, reason="empty")],
    )
    assert logic.ingest_rows(report) == [
        {"file": "a.md", "status": "failed", "chunks": 0, "reason": "empty"}
    ]


def test_ui_source_never_imports_model_or_store_code() -> None:
    for path in sorted((ROOT / "services" / "ui").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(HEAVY), f"{path.name} imports {name}"
                if name.startswith("services.") and not name.startswith("services.ui"):
                    assert name in UI_MAY_IMPORT, f"{path.name} imports {name}"


def test_ui_modules_load_without_heavy_packages() -> None:
    """Import every UI module in a fresh interpreter and list what got loaded."""
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import services.ui, services.ui.views\n"
        "mods = ['services.common.api_client', 'services.ui.components', 'services.ui.logic',"
        " 'services.ui.settings'] + ['services.ui.views.' + m.name for m in"
        " pkgutil.iter_modules(services.ui.views.__path__)]\n"
        "[importlib.import_module(m) for m in mods]\n"
        "print(json.dumps({'mods': mods, 'loaded': sorted(sys.modules)}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    body = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(body["mods"]) >= 9  # five pages among them
    heavy = [m for m in body["loaded"] if m.split(".")[0] in HEAVY or m.startswith(HEAVY)]
    assert not heavy, heavy


def test_quoted_chunk_escapes_block_markup_only() -> None:
    from services.ui.logic import quoted_chunk

    text = "# Warranty\nThe LO-200 has **3 years**.\n- item\n---\n> quote\n12. x"
    assert quoted_chunk(text) == (
        "\\# Warranty\nThe LO-200 has **3 years**.\n\\- item\n\\---\n\\> quote\n12\\. x"
    )


def test_ui_settings_share_the_api_url_and_key_names(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from services.common.settings import TunestackDeprecationWarning
    from services.ui.settings import UiSettings

    monkeypatch.chdir(tmp_path)  # no .env
    for name in ("TUNESTACK_API_URL", "TUNESTACK_UI_API_URL", "TUNESTACK_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TUNESTACK_API_URL", "http://api:8000")
    monkeypatch.setenv("TUNESTACK_API_KEY", "k1")
    monkeypatch.setenv("TUNESTACK_UI_PORT", "9999")
    monkeypatch.setenv("TUNESTACK_UI_TIMEOUT_S", "7")
    s = UiSettings()
    assert (s.api_url, s.api_key_value, s.port, s.timeout_s) == ("http://api:8000", "k1", 9999, 7)
    monkeypatch.delenv("TUNESTACK_API_URL")
    monkeypatch.setenv("TUNESTACK_UI_API_URL", "http://old:8000")
    with pytest.warns(TunestackDeprecationWarning, match="TUNESTACK_API_URL"):
        assert UiSettings().api_url == "http://old:8000"


def test_chat_request_carries_the_sidebar_options() -> None:
    from services.ui.views.chat import chat_request

    history = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1", "sources": []},
        {"role": "user", "content": "q2"},
    ]
    opts = {
        "collection": "kb",
        "embedder": "e",
        "llm": None,
        "retrieval_mode": "hybrid",
        "top_k": 3,
        "max_tokens": None,
    }
    body = chat_request(history, opts).model_dump(exclude_none=True)
    assert body == {
        "model": "rag/kb",
        "messages": [
            {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "q2"},
        ],
        "stream": False,
        "top_k": 3,
        "retrieval_mode": "hybrid",
        "embedder": "e",
    }


# ---- nothing from the API or a document loads or links anything -------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("see ![x](https://evil/?q=secret) here", "see [image: x] here"),
        ('![chart](https://e/a(b).png "t")', "[image: chart]"),
        ("![a][r] and ![b][]\n\n[r]: https://evil/x.png", "[image: a] and [image: b]"),
        ('<img src="https://evil/x.png" alt="pic">', "[image: pic]"),
        ("<IMG SRC=https://evil/x.png>", "[image]"),
        ('read [the docs](https://a.b/c "title") now', "read the docs (https://a.b/c) now"),
        ("[a ![i](https://e/i.png)](https://e/l)", "a [image: i] (https://e/l)"),
        ("[t][r]\n\n[r]: <https://e/x>", "t (https://e/x)"),
    ],
)
def test_safe_markdown_turns_images_and_links_into_text(text: str, shown: str) -> None:
    out = logic.safe_markdown(text)
    assert out.startswith(shown) or shown in out, out
    assert "](" not in out.replace("\\](", "")  # no live inline link or image is left
    assert "<" not in out.replace("\\<", "")  # no live HTML


def test_safe_markdown_escapes_html_and_whatever_it_did_not_rewrite() -> None:
    out = logic.safe_markdown("<b>hi</b> <script>x</script> <https://x.y>")
    assert out == "\\<b>hi\\</b> \\<script>x\\</script> \\<https://x.y>"
    # broken-up or nested forms stay text: every ] that could close a link is escaped
    assert logic.safe_markdown("![x\n](https://e/)") == "![x\n\\](https://e/)"
    assert logic.safe_markdown("[r]: https://e/x.png\n![r]") == "[r\\]: https://e/x.png\n[image: r]"
    # a backslash escaping a backslash does not escape the bracket after it
    assert logic.safe_markdown("\\\\](u) \\](u)") == "\\\\\\](u) \\](u)"
    # citations and formatting are kept
    assert logic.safe_markdown("**Two years** [1][2].") == "**Two years** [1\\][2]."


def test_safe_markdown_keeps_fenced_code_and_only_top_level_fences() -> None:
    code = "```python\nx = a[0](1)  # <b>\n```\n![y](https://e/y)"
    assert logic.safe_markdown(code) == "```python\nx = a[0](1)  # <b>\n```\n[image: y]"
    assert logic.safe_markdown("~~~\n![x](u)") == "~~~\n![x](u)"  # unclosed: code to the end
    # a fence inside a list item ends with the item: not trusted as code
    nested = "1. a\n   ```\n   b\n![x](https://e/)\n   ```"
    assert "[image: x]" in logic.safe_markdown(nested)
    # \r is a line break to Markdown too: "```\r![x](u)" must not hide an image from us
    assert logic.safe_markdown("```\n```\r![x](https://e/)") == "```\n```\n[image: x]"


def test_names_from_the_api_are_shown_literally() -> None:
    assert logic.md_escape("**x**") == "\\*\\*x\\*\\*"
    assert logic.md_escape("[a](b)") == "\\[a\\](b)"
    assert logic.md_escape("<img src=x> ![i](u)") == "\\<img src=x\\> \\!\\[i\\](u)"
    assert logic.md_escape("# title\n\n- item") == "\\# title - item"  # one line
    assert logic.md_escape("12. x") == "12\\. x"
    assert logic.md_escape("all-minilm-l6-v2") == "all-minilm-l6-v2"  # readable as is


def test_card_text_stays_inside_its_html_block() -> None:
    """A blank line would end the HTML block and let the rest render as Markdown."""
    card = logic.hit_card_html(hit("c", 1, text="a\n\n![x](https://e/x)"), None, None, False)
    assert "\n" not in card and "a ![x](https://e/x)" in card


def test_role_pages() -> None:
    assert [p.title for p in logic.pages_for("user")] == ["Chat", "Compare retrieval"]
    assert [p.title for p in logic.pages_for("admin")] == [p.title for p in logic.PAGES]
    assert len(logic.PAGES) == 5 and logic.pages_for("nobody") == logic.pages_for("user")
    assert {p.path for p in logic.PAGES if p.admin} == {
        "views/evaluate.py",
        "views/models.py",
        "views/documents.py",
    }


# ---- RAG evaluation reports ------------------------------------------------------------------


def test_gold_spans_are_marked_in_escaped_chunk_text() -> None:
    text = "The <b>LO-200</b> costs\n49   EUR; <img src=x onerror=alert(1)> 49 eur again."
    out = logic.highlight_html(text, ["49 EUR", "<b>"])
    assert "<mark>49   EUR</mark>" not in out  # spacing is collapsed first, like html_text
    assert out.count("<mark>49 EUR</mark>") == 1 and "<mark>49 eur</mark>" in out
    assert "<mark>&lt;b&gt;</mark>" in out  # a span is escaped like the rest
    assert "<img" not in out and "&lt;img src=x onerror=alert(1)&gt;" in out
    assert "\n" not in out
    assert logic.highlight_html("踢爆为止", ["踢爆"]) == "<mark>踢爆</mark>为止"
    assert logic.highlight_html("a b", []) == "a b"


def test_rag_grid_rows_and_jsonl_records() -> None:
    report = {
        "top_k": 2,
        "judge": None,
        "grid": [
            {"llm": "m", "embedder": "e", "mode": "dense", "questions": 3, "f1": 0.5, "hit@2": 1},
            "not a row",
        ],
    }
    (row,) = logic.rag_grid_rows(report)
    assert row["llm"] == "m" and row["n"] == 3 and row["f1"] == 0.5 and row["hit@2"] == 1.0
    assert row["em"] is None and "judge_correctness" not in row
    assert logic.combo_label(row) == "m · e · dense"
    assert logic.parse_jsonl(b'{"qid": "a"}\nnot json\n[1]\n{"qid": "b"}\n') == [
        {"qid": "a"},
        {"qid": "b"},
    ]
