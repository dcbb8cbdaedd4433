"""Read one document into text, or fail with a reason a person understands.

PDF, DOCX and HTML go through LlamaIndex's file readers (pypdf, docx2txt, BeautifulSoup);
plain text and Markdown are decoded here because LlamaIndex reads them as UTF-8 with
errors ignored, which silently destroys GBK and UTF-16 files.
"""

from __future__ import annotations

import codecs
import logging
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

SUPPORTED_SUFFIXES = (".md", ".markdown", ".txt", ".pdf", ".docx", ".html", ".htm")

log = logging.getLogger(__name__)


class UnreadableFile(Exception):
    """A file we skip; the message is the reason shown in the ingest report."""


@dataclass(frozen=True)
class Section:
    """A piece of a document with its location (PDF page label), kept for citations."""

    text: str
    page: str | None = None


def is_supported(path: Path) -> bool:
    return path.suffix.lower() in SUPPORTED_SUFFIXES


def load(path: Path, max_bytes: int) -> list[Section]:
    size = path.stat().st_size
    if size == 0:
        raise UnreadableFile("empty file")
    if size > max_bytes:
        raise UnreadableFile(
            f"too large ({size / 2**20:.1f} MB > {max_bytes / 2**20:.0f} MB limit; "
            "raise TUNESTACK_RAG_MAX_FILE_MB to ingest it)"
        )
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        sections = _load_pdf(path)
    elif suffix == ".docx":
        sections = _load_docx(path)
    elif suffix in (".html", ".htm"):
        sections = [Section(_html_to_text(decode_text(path.read_bytes())))]
    elif suffix in (".md", ".markdown", ".txt"):
        sections = [Section(decode_text(path.read_bytes()))]
    else:
        raise UnreadableFile(
            f"unsupported file type '{suffix}' (supported: " + ", ".join(SUPPORTED_SUFFIXES) + ")"
        )
    sections = [Section(_normalize(s.text), s.page) for s in sections]
    sections = [s for s in sections if s.text.strip()]
    if not sections:
        raise UnreadableFile("no text found (empty, or a scanned PDF without a text layer)")
    return sections


# ---- text decoding -------------------------------------------------------------

_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def decode_text(data: bytes) -> str:
    """Decode UTF-8, UTF-16 (with or without BOM) or GBK/GB18030; refuse binary."""
    for bom, enc in _BOMS:
        if data.startswith(bom):
            return data.decode(enc)
    if _looks_utf16(data):
        enc = "utf-16-le" if data[1:2] == b"\x00" else "utf-16-be"
        try:
            return data.decode(enc)
        except UnicodeDecodeError as e:
            raise UnreadableFile(f"looks like UTF-16 but does not decode: {e}") from e
    if b"\x00" in data[:8192]:
        raise UnreadableFile("binary content (NUL bytes), not a text document")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        text = data.decode("gb18030")  # superset of GBK and GB2312
        if _cjk_ratio(text) > 0.05:
            return text
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data[: 1 << 20]).best()
    if best is None or best.encoding is None:
        raise UnreadableFile("binary content or unknown text encoding")
    text = data.decode(best.encoding, errors="replace")
    if _control_ratio(text) > 0.05:
        raise UnreadableFile("binary content, not a text document")
    return text


def _looks_utf16(data: bytes) -> bool:
    sample = data[:4096]
    if len(sample) < 4:
        return False
    even_nuls = sample[0::2].count(0) / (len(sample) / 2)
    odd_nuls = sample[1::2].count(0) / (len(sample) / 2)
    # ASCII-heavy UTF-16 has NULs in every other byte; CJK UTF-16 has none but then
    # is caught by the strict UTF-8/GB18030 attempts failing and charset_normalizer.
    return max(even_nuls, odd_nuls) > 0.3 and min(even_nuls, odd_nuls) < 0.05


def _cjk_ratio(text: str) -> float:
    if not text:
        return 0.0
    cjk = sum(1 for c in text if "\u4e00" <= c <= "\u9fff" or "\u3000" <= c <= "\u303f")
    return cjk / len(text)


def _control_ratio(text: str) -> float:
    if not text:
        return 0.0
    bad = sum(1 for c in text if (ord(c) < 32 and c not in "\t\n\r\f") or c == "\ufffd")
    return bad / len(text)


_WS = re.compile(r"[ \t\u00a0]+")
_BLANKS = re.compile(r"\n{3,}")


def _normalize(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = _WS.sub(" ", text)
    return _BLANKS.sub("\n\n", text).strip()


# ---- rich formats via LlamaIndex readers ------------------------------------------


def _load_pdf(path: Path) -> list[Section]:
    from llama_index.readers.file import PDFReader

    with path.open("rb") as f:
        if f.read(5) != b"%PDF-":
            raise UnreadableFile("not a PDF (missing %PDF header)")
    try:
        # PDFReader retries 3x on any error; call the undecorated function once.
        docs = PDFReader.load_data.__wrapped__(PDFReader(), path)
    except Exception as e:
        raise UnreadableFile(f"corrupt PDF: {type(e).__name__}: {e}") from e
    return [Section(d.text, str(d.metadata.get("page_label") or "") or None) for d in docs]


def _load_docx(path: Path) -> list[Section]:
    from llama_index.readers.file import DocxReader

    if not zipfile.is_zipfile(path):
        raise UnreadableFile("corrupt DOCX (not a zip archive)")
    try:
        docs = DocxReader().load_data(path)
    except Exception as e:
        raise UnreadableFile(f"corrupt DOCX: {type(e).__name__}: {e}") from e
    return [Section(d.text) for d in docs]


def _html_to_text(html: str) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    lines = (line.strip() for line in soup.get_text("\n").splitlines())
    # drop separator-only lines that navigation bars leave behind ("·", "|", "»")
    return "\n".join(line for line in lines if any(ch.isalnum() for ch in line))
