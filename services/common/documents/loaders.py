"""Read one document into text, or fail with a reason a person understands.

PDF pages are read with pypdf, DOCX parts with a streaming XML parser, HTML with
BeautifulSoup; plain text and Markdown are decoded here because LlamaIndex reads them as
UTF-8 with errors ignored, which silently destroys GBK and UTF-16 files.

A file is small on disk (TUNESTACK_RAG_MAX_FILE_MB) but may unpack into much more work:
a DOCX is a zip archive (a "zip bomb" expands 1,000x), a 16 MB PDF can hold 100,000 pages
or a page whose compressed content stream decodes to 75 MB. LoadLimits bounds what one
file may cost: a DOCX's zip directory is checked before any member is read, and a PDF or
DOCX is read up to a page and a character cap, with a note saying what was left out.
"""

from __future__ import annotations

import codecs
import dataclasses
import logging
import re
import zipfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import iterparse

SUPPORTED_SUFFIXES = (".md", ".markdown", ".txt", ".pdf", ".docx", ".html", ".htm")

log = logging.getLogger(__name__)


class UnreadableFile(Exception):
    """A file we skip; the message is the reason shown in the ingest report."""


@dataclass(frozen=True)
class Section:
    """A piece of a document with its location (PDF page label), kept for citations."""

    text: str
    page: str | None = None


MB = 2**20


@dataclass(frozen=True)
class LoadLimits:
    """What one document may cost to read (RagSettings: TUNESTACK_RAG_MAX_PDF_PAGES,
    _MAX_TEXT_CHARS, _MAX_DOCX_UNZIPPED_MB, _MAX_ZIP_RATIO). Beyond the page and text caps
    the rest of a document is left out with a note; a DOCX over the zip limits is refused
    before any member is read."""

    max_pages: int = 2000  # PDF pages read
    max_chars: int = 20_000_000  # characters of text taken from one PDF or DOCX
    max_unzipped_bytes: int = 200 * MB  # a DOCX's members, uncompressed, in all
    max_zip_ratio: float = 100.0  # uncompressed / compressed, of a member >= ratio_min_bytes
    ratio_min_bytes: int = 10 * MB  # smaller members may compress well (XML does: ~10x)
    # pypdf parses content streams at ~1.5 MB/s: a page over this is left out (its text
    # would take seconds; honest pages with text are 5-100 kB), and reading stops after
    # this much content in all (about what chunking a 16 MB text file costs)
    max_page_content_bytes: int = 2 * MB
    max_content_bytes: int = 32 * MB


DEFAULT_LIMITS = LoadLimits()


def is_supported(path: Path) -> bool:
    return path.suffix.lower() in SUPPORTED_SUFFIXES


def load(
    path: Path,
    max_bytes: int,
    limits: LoadLimits = DEFAULT_LIMITS,
    notes: list[str] | None = None,
) -> list[Section]:
    """The document's text sections; `notes` (when given) receives what was left out
    (pages or text beyond the caps), for the ingest report."""
    size = path.stat().st_size
    if size == 0:
        raise UnreadableFile("empty file")
    if size > max_bytes:
        raise UnreadableFile(
            f"too large ({size / 2**20:.1f} MB > {max_bytes / 2**20:.0f} MB limit; "
            "raise TUNESTACK_RAG_MAX_FILE_MB to ingest it)"
        )
    suffix = path.suffix.lower()
    said: list[str] = [] if notes is None else notes
    if suffix == ".pdf":
        sections = _load_pdf(path, limits, said)
    elif suffix == ".docx":
        sections = _load_docx(path, limits, said)
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
        why = "".join(f"; {n}" for n in said[:3])
        raise UnreadableFile(f"no text found (empty, or a scanned PDF without a text layer){why}")
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


# ---- PDF ---------------------------------------------------------------------------

# attributes a page inherits from its ancestors in the page tree (PDF 1.7, 7.7.3.4)
_INHERITED = ("/Resources", "/MediaBox", "/CropBox", "/Rotate")


def _load_pdf(path: Path, limits: LoadLimits, notes: list[str]) -> list[Section]:
    """One section per page (text and page label), up to the page, text and content caps.

    Not LlamaIndex's PDFReader: it builds pypdf's list of every page first (9 s and 400 MB
    for 100,000 pages) and recomputes every page label for each page (quadratic)."""
    import pypdf

    with path.open("rb") as f:
        if f.read(5) != b"%PDF-":
            raise UnreadableFile("not a PDF (missing %PDF header)")
    sections: list[Section] = []
    chars = content = 0
    page_cap = limits.max_page_content_bytes
    try:
        with _pypdf_limits(page_cap):
            reader = pypdf.PdfReader(path)
            for i, page in enumerate(_pdf_pages(reader, limits.max_pages + 1)):
                if i == limits.max_pages:
                    total = _declared_pages(reader)
                    of = f"of {total:,} " if total > i else ""
                    notes.append(
                        f"truncated: read the first {i:,} {of}pages (TUNESTACK_RAG_MAX_PDF_PAGES)"
                    )
                    break
                size = _content_size(page, page_cap)
                content += size  # skipped pages count too: each costs up to page_cap to see
                if content > limits.max_content_bytes:
                    notes.append(
                        f"truncated: stopped at page {i + 1}, the pages' content exceeds "
                        f"{limits.max_content_bytes / MB:.0f} MB in all"
                    )
                    break
                if size > page_cap:
                    notes.append(
                        f"page {i + 1}: text not read, its content exceeds {page_cap / MB:.0f} MB"
                    )
                    continue
                try:
                    text = page.extract_text()
                except _limit_reached() as e:  # a form XObject over the cap, say
                    notes.append(f"page {i + 1}: text not read ({type(e).__name__}: {e})")
                    continue
                if chars + len(text) > limits.max_chars:
                    sections.append(
                        Section(text[: limits.max_chars - chars], _page_label(reader, i))
                    )
                    notes.append(_text_cap_note(limits, f" (stopped at page {i + 1})"))
                    break
                chars += len(text)
                sections.append(Section(text, _page_label(reader, i)))
    except UnreadableFile:
        raise
    except Exception as e:
        raise UnreadableFile(f"corrupt PDF: {type(e).__name__}: {e}") from e
    return sections


def _pypdf_limits(page_cap: int) -> AbstractContextManager[Any]:
    """pypdf's own decompression limits (75 MB a stream) lowered to just above the page
    cap, for this thread only, so an oversized content stream is never fully inflated."""
    import pypdf

    apply = getattr(pypdf, "apply_configuration", None)
    if apply is None:  # pypdf < 6.x: no per-context limits; pages are measured decoded
        return nullcontext()
    names = (
        "zlib_maximum_output_length",
        "lzw_maximum_output_length",
        "run_length_maximum_output_length",
        "brotli_maximum_output_length",
        "array_based_stream_maximum_output_length",
    )
    known = {f.name for f in dataclasses.fields(pypdf.Configuration)}
    return apply(**{n: page_cap + 1 for n in names if n in known})


def _pdf_pages(reader: Any, limit: int) -> Iterator[Any]:
    """The first `limit` pages, in order, walking the page tree lazily: only the pages
    read are parsed. A /Pages node met twice (a cycle, or a shared subtree) is skipped,
    and the walk ends after 10 nodes a page (a tree of empty nodes costs a parse each)."""
    from pypdf import PageObject
    from pypdf.generic import DictionaryObject, IndirectObject, NameObject

    frames: list[tuple[Iterator[Any], dict[str, Any]]] = [
        (iter([reader.root_object.get("/Pages")]), {})
    ]
    seen: set[Any] = set()
    found = visits = 0
    while frames and found < limit and visits < 10 * limit + 1000:
        kids, inherit = frames[-1]
        ref = next(kids, None)
        if ref is None:
            frames.pop()
            continue
        visits += 1
        node = ref.get_object()
        if not isinstance(node, DictionaryObject):
            continue
        if node.get("/Type") == "/Pages" or ("/Type" not in node and "/Kids" in node):
            key = (ref.idnum, ref.generation) if isinstance(ref, IndirectObject) else id(node)
            if key in seen or len(frames) > 64:
                continue
            seen.add(key)
            own: dict[Any, Any] = {NameObject(a): node[a] for a in _INHERITED if a in node}
            inherited = {**inherit, **own}
            children = node.get("/Kids")
            children = children.get_object() if children is not None else []
            frames.append((iter(children if isinstance(children, list) else []), inherited))
            continue
        page = PageObject(reader, ref if isinstance(ref, IndirectObject) else None)
        if not isinstance(ref, IndirectObject):
            page.update(node)
        for attr, value in inherit.items():
            if attr not in page:
                page[attr] = value
        found += 1
        yield page


def _declared_pages(reader: Any) -> int:
    try:
        return int(reader.root_object["/Pages"].get_object().get("/Count", 0))
    except Exception:
        return 0


def _limit_reached() -> type[Exception] | tuple[()]:
    """pypdf's error for a limit of its Configuration (none before pypdf 3.x)."""
    from pypdf import errors

    return getattr(errors, "LimitReachedError", ())


def _content_size(page: Any, cap: int) -> int:
    """Bytes of the page's decoded content streams; more than `cap` when pypdf's lowered
    limit stopped the decoding."""
    try:
        contents = page.get_contents()
        return len(contents.get_data()) if contents is not None else 0
    except _limit_reached():
        return cap + 1


def _page_label(reader: Any, index: int) -> str | None:
    """The page's label ("iv", "A-3"), as PDFReader reports it, without computing every
    page's label (pypdf's `page_labels` does, and PDFReader asks it once per page)."""
    try:
        from pypdf._page_labels import index2label

        return str(index2label(reader, index)) or None
    except Exception:
        return str(index + 1)


def _text_cap_note(limits: LoadLimits, where: str = "") -> str:
    return (
        f"truncated: read the first {limits.max_chars:,} characters of text{where} "
        "(TUNESTACK_RAG_MAX_TEXT_CHARS)"
    )


# ---- DOCX --------------------------------------------------------------------------

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
# the parts docx2txt reads, in its order: headers, the body, footers
_HEADER = re.compile(r"word/header[0-9]*.xml")
_FOOTER = re.compile(r"word/footer[0-9]*.xml")


def _load_docx(path: Path, limits: LoadLimits, notes: list[str]) -> list[Section]:
    """The text docx2txt (LlamaIndex's DocxReader) extracts, read as a stream: the zip
    directory is checked first (declared sizes bound what zipfile will inflate: it stops
    at a member's declared size), then each part is parsed without building its tree."""
    if not zipfile.is_zipfile(path):
        raise UnreadableFile("corrupt DOCX (not a zip archive)")
    try:
        with zipfile.ZipFile(path) as zf:
            _check_zip(zf, limits)
            names = zf.namelist()
            parts = [n for n in names if _HEADER.match(n)] + ["word/document.xml"]
            parts += [n for n in names if _FOOTER.match(n)]
            out: list[str] = []
            budget = limits.max_chars
            for name in parts:
                budget = _xml_text(zf, name, budget, out)
                if budget < 0:
                    notes.append(_text_cap_note(limits))
                    break
    except UnreadableFile:
        raise
    except Exception as e:
        raise UnreadableFile(f"corrupt DOCX: {type(e).__name__}: {e}") from e
    return [Section("".join(out).strip())]


def _check_zip(zf: zipfile.ZipFile, limits: LoadLimits) -> None:
    """Refuse a zip bomb from its directory alone, before any member is inflated."""
    infos = zf.infolist()
    total = sum(i.file_size for i in infos)
    if total > limits.max_unzipped_bytes:
        raise UnreadableFile(
            f"skipped: looks like a zip bomb ({len(infos)} members would expand to "
            f"{_size(total)}, over the {_size(limits.max_unzipped_bytes)} limit; "
            "TUNESTACK_RAG_MAX_DOCX_UNZIPPED_MB)"
        )
    for i in infos:
        ratio = i.file_size / max(i.compress_size, 1)
        if i.file_size >= limits.ratio_min_bytes and ratio > limits.max_zip_ratio:
            raise UnreadableFile(
                f"skipped: looks like a zip bomb ({i.filename} expands {ratio:,.0f}x, "
                f"{_size(i.compress_size)} to {_size(i.file_size)}; the limit is "
                f"{limits.max_zip_ratio:,.0f}x, TUNESTACK_RAG_MAX_ZIP_RATIO)"
            )


def _size(n: int) -> str:
    if n >= 2**30:
        return f"{n / 2**30:,.1f} GB"
    return f"{n / MB:,.0f} MB" if n >= MB else f"{n / 1024:,.0f} kB"


def _xml_text(zf: zipfile.ZipFile, name: str, budget: int, out: list[str]) -> int:
    """Append the text of one WordprocessingML part as docx2txt's xml2text writes it
    (w:t text, w:tab a tab, w:br/w:cr a newline, w:p a blank line before the paragraph);
    returns the budget left, negative once the text cap is hit. Each element is dropped
    once parsed, so memory stays flat however large the part."""
    marks = {f"{_W}p": "\n\n", f"{_W}tab": "\t", f"{_W}br": "\n", f"{_W}cr": "\n"}
    text_tag = f"{_W}t"
    stack: list[Any] = []
    with zf.open(name) as f:
        for event, el in iterparse(f, events=("start", "end")):
            if event == "start":
                stack.append(el)
                piece = marks.get(el.tag)
            else:
                stack.pop()
                piece = el.text if el.tag == text_tag else None
                el.clear()
                if stack:
                    stack[-1].remove(el)  # its only child by now: O(1)
            if piece:
                if len(piece) > budget:
                    out.append(piece[:budget])
                    return -1
                out.append(piece)
                budget -= len(piece)
    return budget


def _html_to_text(html: str) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    lines = (line.strip() for line in soup.get_text("\n").splitlines())
    # drop separator-only lines that navigation bars leave behind ("·", "|", "»")
    return "\n".join(line for line in lines if any(ch.isalnum() for ch in line))
