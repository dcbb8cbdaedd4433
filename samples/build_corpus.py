"""Build the binary documents of the sample corpus from their Markdown sources.

The PDF and DOCX files are not committed; their text lives in samples/corpus_src/*.md
and this script renders them into samples/corpus/generated/ (git-ignored):

    /work/main/.venv/bin/python samples/build_corpus.py          # from the repo root
    /work/main/.venv/bin/python samples/build_corpus.py --force  # rebuild everything

An output is skipped when it is newer than both its source and this script. The
Markdown understood here is deliberately small: '#'-headings, paragraphs, '- ' bullet
items and '1. ' numbered items, with **bold**, *italic*, `code` and [text](url) inline
markup stripped to plain text.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC_DIR = HERE / "corpus_src"
OUT_DIR = HERE / "corpus" / "generated"

# source file (in corpus_src/) -> output file (in corpus/generated/)
TARGETS = {
    "warranty.md": "warranty.pdf",  # English only: the PDF core fonts have no CJK glyphs
    "zh_distributor_agreement.md": "zh_distributor_agreement.docx",
}

AUTHOR = "Lumen & Oak (fictional sample corpus)"


# ---- a very small Markdown reader ------------------------------------------------


@dataclass
class Block:
    kind: str  # "heading" | "para" | "bullet" | "number"
    text: str
    level: int = 0  # heading level, or the number of a numbered item


_INLINE = [
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),  # [text](url) -> text
    (re.compile(r"\*\*(.+?)\*\*"), r"\1"),
    (re.compile(r"__(.+?)__"), r"\1"),
    (re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])"), r"\1"),
    (re.compile(r"`([^`]+)`"), r"\1"),
]
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_BULLET = re.compile(r"^\s*[-*+]\s+(.*)$")
_NUMBER = re.compile(r"^\s*(\d+)[.)]\s+(.*)$")


def _inline(text: str) -> str:
    for pattern, repl in _INLINE:
        text = pattern.sub(repl, text)
    return text.strip()


def parse_markdown(text: str) -> list[Block]:
    blocks: list[Block] = []
    para: list[str] = []

    def flush() -> None:
        if para:
            blocks.append(Block("para", _inline(" ".join(para))))
            para.clear()

    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip():
            flush()
            continue
        if m := _HEADING.match(line):
            flush()
            blocks.append(Block("heading", _inline(m.group(2)), len(m.group(1))))
        elif m := _BULLET.match(line):
            flush()
            blocks.append(Block("bullet", _inline(m.group(1))))
        elif m := _NUMBER.match(line):
            flush()
            blocks.append(Block("number", _inline(m.group(2)), int(m.group(1))))
        elif blocks and blocks[-1].kind in ("bullet", "number") and not para and raw[:1].isspace():
            blocks[-1].text += " " + _inline(line)  # continuation of a list item
        else:
            para.append(line.strip())
    flush()
    return blocks


def title_of(blocks: list[Block], fallback: str) -> str:
    for b in blocks:
        if b.kind == "heading":
            return b.text
    return fallback


# ---- PDF (fpdf2, core font Helvetica) ------------------------------------------------

_LATIN1_FIXES = {
    " \u2014 ": " - ",
    "\u2014": " - ",
    "\u2013": "-",
    "\u2212": "-",
    "\u2010": "-",
    "\u2011": "-",
    "\u2018": "'",
    "\u2019": "'",
    "\u201a": ",",
    "\u201c": '"',
    "\u201d": '"',
    "\u201e": '"',
    "\u2026": "...",
    "\u2022": "-",
    "\u00a0": " ",
    "\u2009": " ",
    "\u202f": " ",
    "\u20ac": "EUR",
    "\u2192": "->",
    "\u2190": "<-",
    "\u2264": "<=",
    "\u2265": ">=",
    "\u2122": "(TM)",
    "\u00ad": "",
}


def latin1(text: str) -> str:
    """Make text printable with a core PDF font: map common symbols, '?' for the rest."""
    for bad, good in _LATIN1_FIXES.items():
        text = text.replace(bad, good)
    return text.encode("latin-1", errors="replace").decode("latin-1")


def build_pdf(blocks: list[Block], out: Path, title: str) -> None:
    from fpdf import FPDF
    from fpdf.enums import XPos, YPos

    class Doc(FPDF):
        def footer(self) -> None:
            self.set_y(-15)
            self.set_font("Helvetica", "", 8)
            self.set_text_color(110, 110, 110)
            self.cell(0, 10, latin1(f"{title} - page {self.page_no()}/{{nb}}"), align="C")
            self.set_text_color(0, 0, 0)

    pdf = Doc(format="A4")
    pdf.set_title(latin1(title))
    pdf.set_author(latin1(AUTHOR))
    pdf.set_creator("samples/build_corpus.py")
    pdf.set_margins(20, 20, 20)
    pdf.set_auto_page_break(auto=True, margin=20)
    pdf.alias_nb_pages()
    pdf.add_page()

    nl = {"new_x": XPos.LMARGIN, "new_y": YPos.NEXT}
    sizes = {1: 18, 2: 13, 3: 12}
    indent = 6
    for i, b in enumerate(blocks):
        if b.kind == "heading":
            size = sizes.get(b.level, 11)
            if i:
                pdf.ln(3 if b.level > 1 else 5)
            pdf.set_font("Helvetica", "B", size)
            pdf.multi_cell(0, size * 0.5, latin1(b.text), **nl)
            pdf.ln(2)
        elif b.kind in ("bullet", "number"):
            marker = "-" if b.kind == "bullet" else f"{b.level}."
            pdf.set_font("Helvetica", "", 11)
            pdf.set_x(pdf.l_margin + indent)
            pdf.cell(indent, 6, marker)
            pdf.multi_cell(pdf.epw - 2 * indent, 6, latin1(b.text), **nl)
            pdf.ln(1)
        else:
            pdf.set_font("Helvetica", "", 11)
            pdf.multi_cell(0, 6, latin1(b.text), **nl)
            pdf.ln(3)
    pdf.output(str(out))


# ---- DOCX (python-docx) --------------------------------------------------------------------


def build_docx(blocks: list[Block], out: Path, title: str) -> None:
    from docx import Document
    from docx.oxml.ns import qn

    doc = Document()
    doc.core_properties.title = title
    doc.core_properties.author = AUTHOR
    # An East Asian font for Chinese text in the body and heading styles.
    for name in (
        "Normal",
        "Title",
        "Heading 1",
        "Heading 2",
        "Heading 3",
        "List Bullet",
        "List Number",
    ):
        style = doc.styles[name]
        rpr = style.element.get_or_add_rPr()
        rfonts = rpr.find(qn("w:rFonts"))
        if rfonts is None:
            rfonts = rpr.makeelement(qn("w:rFonts"), {})
            rpr.append(rfonts)
        rfonts.set(qn("w:eastAsia"), "SimSun")

    for b in blocks:
        if b.kind == "heading":
            doc.add_heading(b.text, level=min(b.level, 9))
        elif b.kind == "bullet":
            doc.add_paragraph(b.text, style="List Bullet")
        elif b.kind == "number":
            doc.add_paragraph(b.text, style="List Number")
        else:
            doc.add_paragraph(b.text)
    doc.save(str(out))


BUILDERS = {".pdf": build_pdf, ".docx": build_docx}


# ---- driver ------------------------------------------------------------------------------


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def build(force: bool = False) -> int:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    script_mtime = Path(__file__).stat().st_mtime
    for src in sorted(SRC_DIR.glob("*.md")):
        if src.name not in TARGETS:
            print(f"warning: {_rel(src)} has no target in TARGETS; not built", file=sys.stderr)
    failures = 0
    for src_name, out_name in TARGETS.items():
        src = SRC_DIR / src_name
        out = OUT_DIR / out_name
        if not src.is_file():
            print(f"error: source {_rel(src)} is missing", file=sys.stderr)
            failures += 1
            continue
        newest_input = max(src.stat().st_mtime, script_mtime)
        if not force and out.is_file() and out.stat().st_mtime > newest_input:
            print(f"up to date: {_rel(out)}")
            continue
        blocks = parse_markdown(src.read_text(encoding="utf-8"))
        title = title_of(blocks, src.stem)
        tmp = out.with_name(out.name + ".tmp" + out.suffix)
        try:
            BUILDERS[out.suffix](blocks, tmp, title)
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
        print(f"wrote {_rel(out)} ({out.stat().st_size} bytes) from {_rel(src)}")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--force", action="store_true", help="rebuild even if outputs are up to date"
    )
    return build(force=parser.parse_args().force)


if __name__ == "__main__":
    sys.exit(main())
