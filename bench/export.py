"""Export benchmark: `tunestack llm export` vs llama.cpp's converter and quantizer run
directly on the same merged model; file size per GGUF type; generation speed per type.

    python bench/export.py --run RUN           # an exported run in TUNESTACK_HOME
    python bench/export.py                     # exports a fresh synthetic LoRA run first

"Ours" is the convert + quantize + hash/commit part of the export as meta.json timed it
(merge, parity and the stop check have no counterpart in the direct path and are shown on
their own). "Direct" runs llama.cpp's convert_hf_to_gguf.py on the run's merged/ folder in
a child process, then llama_model_quantize (the function llama-quantize calls) for each
type. The bundled base's tokenizer cannot be converted by the stock script (see
services/converter/hf_to_gguf_runner.py), so the direct run goes through the same runner,
which replaces only the vocab step; everything else is llama.cpp's code as-is.

Ours and direct alternate --repeats times (median per step; min and max shown): after the
gated export (6 parity and 6 stop prompts: the parity table) ours re-exports the synthetic
run with the gates cut to one prompt, as they are outside the compared time; with --run,
ours is that run's one export as meta.json timed it (not re-exported).

Generation: llama.cpp in this process, greedy, 2 threads, 64 new tokens for each of 3
prompts, --repeats passes per type; prompt processing and generation are timed apart and
the median over the prompt runs is shown.

Memory: the export process's peak RSS (merge, HF reference, parity; only when this script
runs the export); the converter process's own peak (the same command on both paths,
measured on the direct one); the quantizer's peak above the resident set before it; per
GGUF type the peak above the resident set before loading (llama.cpp mmaps the file, so
its touched pages count).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import ROOT  # puts ROOT on sys.path; HF_HUB_OFFLINE=1 unless set

from services.common.fdcapture import capture_stderr
from services.common.records import ExportRun
from services.common.registry import Registry
from services.common.settings import process_environ
from services.converter.convert import base_entry, base_gguf_of
from services.converter.export import ExportRequest, export
from services.converter.quantize import quantize
from services.converter.settings import ConvertSettings
from services.converter.toolchain import scripts_dir

QUANTS = ["f16", "q8_0", "q4_k_m", "q5_k_m"]
PROMPTS = [
    "Explain what a database index is.",
    "Write a short story about a lighthouse keeper.",
    "List five tips for better sleep.",
]


def synthetic_run(home: Path) -> str:
    """A LoRA run on the bundled base with nonzero B (as tests/integration does)."""
    from tests.integration.test_converter import make_lora_run  # pytest + torch: only here

    make_lora_run(Registry(home), "bench-lora")
    return "bench-lora"


def last_export(registry: Registry, run: str) -> ExportRun:
    export_run = registry.llm(run).record.export
    if export_run is None:
        raise SystemExit(f"{run} has not been exported: tunestack llm export {run}")
    return export_run


def _rss_kb(field: str) -> int:
    m = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    return int(m.group(1)) if m else 0


def reset_peak() -> int:
    """Reset this process's peak RSS (Linux clear_refs 5); returns the current RSS in kB."""
    with contextlib.suppress(OSError):  # not Linux, or not allowed: peak since start
        Path("/proc/self/clear_refs").write_text("5")
    return _rss_kb("VmRSS")


def peak_above(base_kb: int) -> float:
    """MiB of peak RSS above `base_kb` since the last reset_peak()."""
    return max(0, _rss_kb("VmHWM") - base_kb) / 1024


# Runs hf_to_gguf_runner as `python -m` would, and writes the process's own /proc status at
# exit. (A child's ru_maxrss from wait4 is no use here: it includes the parent's resident
# set at exec time, which is larger than the converter's.)
_LAUNCH = (
    "import atexit, pathlib, runpy, sys\n"
    "out = pathlib.Path(sys.argv.pop(1))\n"
    "atexit.register(lambda: out.write_text(pathlib.Path('/proc/self/status').read_text()))\n"
    "runpy.run_module('services.converter.hf_to_gguf_runner', run_name='__main__')\n"
)


def convert_child(
    scripts: Path, args: list[str], base_gguf: Path | None, tmpl: Path | None, status: Path
) -> tuple[float, float]:
    """The command run_converter runs (seconds, the converter process's peak RSS in MiB)."""
    cmd = [sys.executable, "-c", _LAUNCH, str(status), "--scripts", str(scripts)]
    if base_gguf is not None:
        cmd += ["--tokenizer-from", str(base_gguf)]
    if tmpl is not None:
        cmd += ["--chat-template-file", str(tmpl)]
    t0 = time.monotonic()
    p = subprocess.run(
        [*cmd, "--", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=process_environ({"PYTHONUNBUFFERED": "1"}),
    )
    seconds = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit(f"converter failed:\n{(p.stderr or p.stdout)[-3000:]}")
    m = re.search(r"^VmHWM:\s+(\d+) kB", status.read_text(), re.M)
    return seconds, int(m.group(1)) / 1024 if m else float("nan")


def direct(run_dir: Path, base_gguf: Path | None, out: Path, threads: int) -> dict[str, float]:
    scripts = scripts_dir()
    t: dict[str, float] = {}
    f16 = out / "direct.f16.gguf"
    tmpl = run_dir / "merged" / "chat_template.jinja"
    t["convert"], t["mem_convert"] = convert_child(
        scripts,
        [str(run_dir / "merged"), "--outfile", str(f16), "--outtype", "f16"],
        base_gguf,
        tmpl if base_gguf and tmpl.is_file() else None,
        out / "converter.status",
    )
    for q in QUANTS[1:]:
        base = reset_peak()
        t0 = time.monotonic()
        quantize(f16, out / f"direct.{q}.gguf", q, threads=threads)
        t[q] = time.monotonic() - t0
        t[f"mem_{q}"] = peak_above(base)
    for f in out.glob("direct.*.gguf"):
        f.unlink()
    return t


def speed(path: Path, threads: int, repeats: int) -> dict[str, float]:
    """Median prompt and generation tok/s over repeats x PROMPTS, and the peak RSS added."""
    from llama_cpp import Llama

    base = reset_peak()
    with capture_stderr():
        llm = Llama(model_path=str(path), n_ctx=512, n_threads=threads, verbose=False)
    pp: list[float] = []
    gen: list[float] = []
    for _ in range(repeats):
        for p in PROMPTS:
            ids = llm.tokenize(p.encode(), add_bos=True, special=True)
            llm.reset()
            t0 = time.monotonic()
            llm.eval(ids)
            pp.append(len(ids) / (time.monotonic() - t0))
            t0 = time.monotonic()
            n = 0
            for _ in llm.generate(ids, temp=0.0, top_k=1, reset=True):
                n += 1
                if n >= 64:
                    break
            gen.append(n / (time.monotonic() - t0))
    mem = peak_above(base)
    del llm
    return {
        "prompt_tok_s": statistics.median(pp),
        "gen_tok_s": statistics.median(gen),
        "gen_tok_s_min": min(gen),
        "gen_tok_s_max": max(gen),
        "peak_rss_mb": mem,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", help="an exported run (default: export a synthetic one)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="direct-path and speed repeats")
    args = ap.parse_args()
    s = ConvertSettings(threads=args.threads, parity_prompts=6, stop_prompts=6)
    if "home" not in s.model_fields_set:  # TUNESTACK_HOME unset: a throwaway registry
        s = s.model_copy(update={"home": Path(tempfile.mkdtemp(prefix="bench-export-"))})
    registry = Registry(s.home_dir)
    run = args.run
    mem_ours: dict[str, float] = {}
    if run is None:
        run = synthetic_run(s.home_dir)
        base = reset_peak()
        export(s, ExportRequest(run, QUANTS, "2GB"), say=lambda m: None)
        mem_ours = {
            "export_process_peak_mb": _rss_kb("VmHWM") / 1024,
            "export_process_added_mb": peak_above(base),
        }
    entry = registry.llm(run)
    exp = last_export(registry, run)  # the gated export: parity and stop figures come from here
    quants = [q for q in QUANTS[1:] if q in exp.timings_s["quantize"]]

    def conv_s(t: dict[str, Any]) -> float:
        """convert + quantize (+ hash and commit) seconds of one export's timings."""
        return float(
            t["convert"] + sum(t["quantize"][q] for q in quants) + t.get("hash_and_commit", 0.0)
        )

    # Ours and direct alternate, so both see the same load on shared cores. Ours re-exports
    # the synthetic run with one parity and one short stop prompt (the gates are not part of
    # the compared time); with --run the user's export is left alone and its one timing used.
    quick = s.model_copy(update={"parity_prompts": 1, "stop_prompts": 1, "stop_max_tokens": 8})
    ours_t: list[dict[str, Any]] = [] if args.run is None else [exp.timings_s]
    base_gguf = base_gguf_of(base_entry(registry, entry))
    runs = []
    for _ in range(args.repeats):
        if args.run is None:
            export(quick, ExportRequest(run, QUANTS, "2GB"), say=lambda m: None)
            ours_t.append(last_export(registry, run).timings_s)
        with tempfile.TemporaryDirectory(dir=entry.dir) as tmp:
            runs.append(direct(entry.dir, base_gguf, Path(tmp), args.threads))
    d = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    totals = [r["convert"] + sum(r[q] for q in quants) for r in runs]
    direct_s = statistics.median(totals)
    ours_totals = [conv_s(t) for t in ours_t]
    ours = statistics.median(ours_totals)
    o = {
        "convert": statistics.median(t["convert"] for t in ours_t),
        "hash_and_commit": statistics.median(t.get("hash_and_commit", 0.0) for t in ours_t),
        **{q: statistics.median(t["quantize"][q] for t in ours_t) for q in quants},
    }

    def spread(xs: list[float]) -> str:
        return f"({min(xs):.1f}-{max(xs):.1f})"

    tm = exp.timings_s
    print(f"run {run}: merged/ + {', '.join(exp.files)}; {args.threads} threads")
    print(
        f"\nconvert + quantize   ours (export), median of {len(ours_t)}   "
        f"direct (llama.cpp), median of {len(runs)}"
    )
    rows_t = [("convert f16", "convert"), *((f"quantize {q}", q) for q in quants)]
    for label, k in rows_t:
        ours_k = [t[k] if k == "convert" else t["quantize"][k] for t in ours_t]
        print(
            f"  {label:17s} {o[k]:6.1f}s {spread(ours_k):13s}   "
            f"{d[k]:6.1f}s {spread([r[k] for r in runs])}"
        )
    hc = [t.get("hash_and_commit", 0.0) for t in ours_t]
    print(f"  {'hash + commit':17s} {o['hash_and_commit']:6.1f}s {spread(hc):13s}   {'-':>7s}")
    print(
        f"  {'total':17s} {ours:6.1f}s {spread(ours_totals):13s}   {direct_s:6.1f}s "
        f"{spread(totals)}   ratio {ours / direct_s:.2f}x"
    )
    print(
        f"  (the gated export also ran: merge {tm['merge']:.1f}s, HF reference "
        f"{tm['hf_reference']:.1f}s, parity + stop checks; total {tm['total']:.1f}s)"
    )
    print("\nmemory (peak RSS)")
    for k, v in mem_ours.items():
        print(f"  ours {k:28s} {v:7.0f} MiB")
    print(f"  converter process (both paths)    {d['mem_convert']:7.0f} MiB")
    for q in quants:
        print(f"  direct quantize {q:7s} (added)    {d['mem_' + q]:7.0f} MiB")
    print(
        f"\ntype     size       parity  stops   prompt tok/s  gen tok/s (min-max)   "
        f"RSS added (median of {args.repeats}x{len(PROMPTS)})"
    )
    rows = {}
    for q, r in exp.files.items():
        sp = speed(Path(r.path), args.threads, args.repeats)
        rows[q] = {
            **sp,
            "size": r.size,
            "parity": r.parity.top1_agreement,
            "stop_rate": r.stop_check.rate,
        }
        print(
            f"  {q:7s} {r.size / 2**20:6.0f} MiB  {r.parity.top1_agreement:6.1%}  "
            f"{r.stop_check.stopped:2d}/{r.stop_check.prompts:<2d}  "
            f"{sp['prompt_tok_s']:12.0f}  {sp['gen_tok_s']:9.1f} "
            f"({sp['gen_tok_s_min']:.1f}-{sp['gen_tok_s_max']:.1f})  "
            f"{sp['peak_rss_mb']:8.0f} MiB"
        )
    print(
        json.dumps(
            {
                "ours_s": ours,
                "ratio": ours / direct_s,
                "direct_s": direct_s,
                "direct_runs": runs,
                "ours_runs": ours_t,
                "gated_export_timings_s": tm,
                "memory_mb": mem_ours,
                "per_type": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
