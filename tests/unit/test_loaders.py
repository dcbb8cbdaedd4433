from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from services.common.documents.loaders import UnreadableFile, decode_text, load

ZH = "北京是中国的首都。上海是中国最大的城市！你知道吗？"
MB = 2**20


@pytest.mark.parametrize(
    "data",
    [
        ZH.encode("utf-8"),
        codecs.BOM_UTF8 + ZH.encode("utf-8"),
        ZH.encode("utf-16"),  # with BOM
        ("Plain English text. " * 20).encode("utf-16-le"),  # no BOM
        ("Plain English text. " * 20).encode("utf-16-be"),
        ZH.encode("gbk"),
        ZH.encode("gb18030"),
    ],
)
def test_decode_text_detects_encodings(data: bytes) -> None:
    text = decode_text(data)
    assert "北京" in text or "Plain English" in text
    assert "\ufffd" not in text


def test_gbk_is_not_mistaken_for_utf8() -> None:
    data = ZH.encode("gbk")
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    assert decode_text(data) == ZH


def test_binary_is_refused() -> None:
    with pytest.raises(UnreadableFile, match="binary"):
        decode_text(bytes(range(256)) * 20)


def test_empty_and_oversized(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(UnreadableFile, match="empty"):
        load(empty, MB)
    blank = tmp_path / "blank.md"
    blank.write_text("  \n\n \t ")
    with pytest.raises(UnreadableFile, match="no text"):
        load(blank, MB)
    big = tmp_path / "big.txt"
    big.write_bytes(b"a" * (2 * MB))
    with pytest.raises(UnreadableFile, match="too large"):
        load(big, MB)


def test_html_drops_script_and_style(tmp_path: Path) -> None:
    p = tmp_path / "page.html"
    p.write_text(
        "<html><head><style>.x{color:red}</style><script>var secret=1;</script>"
        "</head><body><h1>Title</h1><p>Visible text.</p></body></html>"
    )
    text = " ".join(s.text for s in load(p, MB))
    assert "Visible text." in text and "Title" in text
    assert "secret" not in text and "color" not in text


def test_pdf_pages_and_corrupt_pdf(tmp_path: Path) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for i in (1, 2):
        pdf.add_page()
        pdf.multi_cell(0, 8, f"Page {i} says the warranty lasts {i + 1} years.")
    good = tmp_path / "good.pdf"
    pdf.output(str(good))
    sections = load(good, MB)
    assert [s.page for s in sections] == ["1", "2"]
    assert "3 years" in sections[1].text

    bad = tmp_path / "bad.pdf"
    bad.write_bytes(good.read_bytes()[:200])  # truncated: header present, body gone
    with pytest.raises(UnreadableFile, match="PDF"):
        load(bad, MB)
    fake = tmp_path / "fake.pdf"
    fake.write_text("just text")
    with pytest.raises(UnreadableFile, match="not a PDF"):
        load(fake, MB)


def test_docx_and_corrupt_docx(tmp_path: Path) -> None:
    import docx

    d = docx.Document()
    d.add_heading("保修政策", level=1)
    d.add_paragraph("所有产品提供三年保修。")
    p = tmp_path / "w.docx"
    d.save(str(p))
    assert "三年保修" in load(p, MB)[0].text
    bad = tmp_path / "bad.docx"
    bad.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(UnreadableFile, match="DOCX"):
        load(bad, MB)
