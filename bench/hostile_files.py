"""Hostile files: ours (zip directory checked first, PDF caps, overlong runs cut before the
splitter) vs the naive pipeline this replaced (LlamaIndex's DocxReader and PDFReader, the
plain SentenceSplitter), per file: wall time and peak memory of reading and chunking it.

Every file fits TUNESTACK_RAG_MAX_FILE_MB (16 MB) and is built in seconds
(tests/unit/hostile_samples.py). Each read runs in its own process (its peak RSS, above
the RSS after imports, is its own); the naive one is stopped at --cap seconds or
--mem-cap MB, whichever comes first (ours at --ours-cap seconds).

    .venv/bin/python bench/hostile_files.py [--cap 60] [--mem-cap 3000] [--ours-cap 300]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _harness import ROOT

from tests.unit import hostile_samples as hs

FILES = {
    "bomb.docx": (hs.zip_bomb_docx, "15 members of 1 GiB of zeros each (1,000x)"),
    "ratio.docx": (hs.ratio_bomb_docx, "document.xml: 150 kB -> 150 MiB"),
    "big_text.docx": (
        hs.big_text_docx,
        "document.xml: 150 MiB of paragraphs, ~10x (under the zip limits: the text cap stops it)",
    ),
    "base64.md": (hs.base64_markdown, "one 16 MB line of base64"),
    "pages.pdf": (hs.many_pages_pdf, "100,000 pages of one line"),
    "huge_page.pdf": (hs.huge_page_pdf, "one page, 64 MiB of text operators (flate)"),
    "text_pages.pdf": (
        lambda p: hs.huge_page_pdf(p, content_mib=2, pages=2000),
        "2,000 pages sharing a 2 MiB text stream (under the page cap: the text cap stops it)",
    ),
}


def naive(path: Path) -> dict[str, Any]:
    """Read and chunk as before: LlamaIndex's readers, the plain SentenceSplitter."""
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.readers.file import DocxReader, PDFReader

    from services.common.documents import loaders
    from services.common.documents.chunking import _CLAUSE_REGEX, split_sentences

    tokens = hs.bundled_token_count()
    splitter = SentenceSplitter(
        chunk_size=hs.CHUNK_SIZE,
        chunk_overlap=hs.CHUNK_OVERLAP,
        tokenizer=tokens,
        paragraph_separator="\n\n",
        chunking_tokenizer_fn=split_sentences,
        secondary_chunking_regex=_CLAUSE_REGEX,
    )
    splitter.split_text("Warm up the splitter and the tokenizer. " * 50)
    before = hs.reset_peak()
    print(json.dumps({"baseline_mb": before}), flush=True)
    t0 = time.perf_counter()
    if path.suffix == ".docx":
        texts = [d.text for d in DocxReader().load_data(path)]
    elif path.suffix == ".pdf":
        texts = [d.text for d in PDFReader.load_data.__wrapped__(PDFReader(), path)]
    else:
        texts = [loaders.decode_text(path.read_bytes())]
    chunks = [c for t in texts for c in splitter.split_text(loaders._normalize(t))]
    return {
        "chunks": len(chunks),
        "seconds": round(time.perf_counter() - t0, 3),
        "peak_extra_mb": round(hs._status_mb("VmHWM") - before, 1),
    }


def run(
    cmd: list[str], cap: float, mem_cap: float
) -> tuple[list[dict[str, Any]], str, float, float]:
    """Run `cmd`, stop it past `cap` seconds or `mem_cap` MB of RSS; its JSON lines, why
    it was stopped (or its error), its wall time and its peak RSS (MB, from wait4)."""
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    why = ""
    t0 = time.monotonic()

    def watch() -> None:
        nonlocal why
        status = Path(f"/proc/{proc.pid}/status")
        while proc.returncode is None:
            try:
                rss = int(status.read_text().split("VmRSS:")[1].split()[0]) / 1024
            except (OSError, IndexError):
                return
            if time.monotonic() - t0 > cap or rss > mem_cap:
                why = (
                    f"stopped at {cap:.0f} s" if rss <= mem_cap else f"stopped at {mem_cap:.0f} MB"
                )
                proc.kill()
                return
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    out, err = proc.communicate()
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    if not why and proc.returncode != 0:
        why = "error: " + (err.strip().splitlines() or ["?"])[-1][:120]
    return rows, why, time.monotonic() - t0, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cap", type=float, default=60, help="seconds a naive read may take")
    ap.add_argument("--mem-cap", type=float, default=3000, help="MB of RSS a read may use")
    ap.add_argument("--ours-cap", type=float, default=300, help="seconds ours may take")
    ap.add_argument("--naive", type=Path, help=argparse.SUPPRESS)  # the worker
    args = ap.parse_args()
    if args.naive:
        print(json.dumps(naive(args.naive)), flush=True)
        return

    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name, (make, what) in FILES.items():
            path = make(Path(d) / name)
            ours, why, _, _ = run(
                [sys.executable, "-m", "tests.unit.hostile_samples", str(path)],
                args.ours_cap,
                args.mem_cap,
            )
            o = ours[0] if ours else {}
            old, old_why, old_wall, old_rss = run(
                [sys.executable, str(Path(__file__)), "--naive", str(path)], args.cap, args.mem_cap
            )
            base = old[0]["baseline_mb"] if old else 0.0
            n = old[1] if len(old) > 1 else {}
            rows.append(
                {
                    "file": name,
                    "what": what,
                    "mb": round(path.stat().st_size / 2**20, 1),
                    "ours_s": o.get("seconds"),
                    "ours_peak_mb": o.get("peak_extra_mb"),
                    "ours": why
                    or f"{o.get('status')}, {o.get('chunks')} chunks: {o.get('reason')}",
                    "naive_s": n.get("seconds", f"{old_wall:.0f} (whole run)"),
                    "naive_peak_mb": n.get("peak_extra_mb", round(old_rss - base, 1)),
                    "naive": old_why or f"{n.get('chunks')} chunks",
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(
        "| file | size | ours: s | ours: peak MB | ours: outcome "
        "| naive: s | naive: peak MB | naive: outcome |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['file']} ({r['what']}) | {r['mb']} MB | {r['ours_s']} | {r['ours_peak_mb']} | "
            f"{r['ours']} | {r['naive_s']} | {r['naive_peak_mb']} | {r['naive']} |"
        )


if __name__ == "__main__":
    main()
