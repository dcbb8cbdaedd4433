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

Generation: llama.cpp in this process, greedy, 2 threads, 64 new tokens for each of
3 prompts (prompt processing and generation measured apart).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.common.fdcapture import capture_stderr  # noqa: E402
from services.common.registry import Registry  # noqa: E402
from services.converter.export import base_gguf_of, export_run, run_converter  # noqa: E402
from services.converter.quantize import quantize  # noqa: E402
from services.converter.settings import ConvertSettings  # noqa: E402
from services.converter.toolchain import scripts_dir  # noqa: E402

QUANTS = ["f16", "q8_0", "q4_k_m", "q5_k_m"]
PROMPTS = [
    "Explain what a database index is.",
    "Write a short story about a lighthouse keeper.",
    "List five tips for better sleep.",
]


def synthetic_run(home: Path) -> str:
    """A LoRA run on the bundled base with nonzero B (as tests/integration does)."""
    sys.path.insert(0, str(ROOT))
    from tests.integration.test_converter import make_lora_run

    make_lora_run(Registry(home), "bench-lora")
    return "bench-lora"


def direct(run_dir: Path, base_gguf: Path | None, out: Path, threads: int) -> dict[str, float]:
    scripts = scripts_dir()
    t: dict[str, float] = {}
    f16 = out / "direct.f16.gguf"
    tmpl = run_dir / "merged" / "chat_template.jinja"
    t["convert"] = run_converter(
        scripts,
        [str(run_dir / "merged"), "--outfile", str(f16), "--outtype", "f16"],
        tokenizer_from=base_gguf,
        chat_template=tmpl if base_gguf and tmpl.is_file() else None,
    )
    for q in QUANTS[1:]:
        t0 = time.monotonic()
        quantize(f16, out / f"direct.{q}.gguf", q, threads=threads)
        t[q] = time.monotonic() - t0
    return t


def speed(path: Path, threads: int) -> dict[str, float]:
    from llama_cpp import Llama

    with capture_stderr():
        llm = Llama(model_path=str(path), n_ctx=512, n_threads=threads, verbose=False)
    pp_tokens = gen_tokens = 0
    pp_s = gen_s = 0.0
    for p in PROMPTS:
        ids = llm.tokenize(p.encode(), add_bos=True, special=True)
        llm.reset()
        t0 = time.monotonic()
        llm.eval(ids)
        pp_s += time.monotonic() - t0
        pp_tokens += len(ids)
        t0 = time.monotonic()
        n = 0
        for _ in llm.generate(ids, temp=0.0, top_k=1, reset=True):
            n += 1
            if n >= 64:
                break
        gen_s += time.monotonic() - t0
        gen_tokens += n
    return {"prompt_tok_s": pp_tokens / pp_s, "gen_tok_s": gen_tokens / gen_s}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", help="an exported run (default: export a synthetic one)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    home = Path(os.environ.get("TUNESTACK_HOME") or tempfile.mkdtemp(prefix="bench-export-"))
    s = ConvertSettings(home=home, threads=args.threads, parity_prompts=6, stop_prompts=6)
    registry = Registry(s.home_dir)
    run = args.run
    if run is None:
        run = synthetic_run(s.home_dir)
        export_run(run, s, quants=QUANTS, export_size="2GB", say=lambda m: None)
    entry = registry.get("llm", run)
    exp = entry.meta["export"]
    tm = exp["timings_s"]
    ours = tm["convert"] + sum(tm["quantize"].values()) + tm.get("hash_and_commit", 0.0)
    with tempfile.TemporaryDirectory(dir=entry.dir) as tmp:
        d = direct(entry.dir, base_gguf_of(entry, registry), Path(tmp), args.threads)
    direct_s = sum(d.values())
    print(f"run {run}: merged/ + {', '.join(exp['files'])}")
    print("\nconvert + quantize   ours (export)   direct (llama.cpp)   ratio")
    print(f"  convert f16        {tm['convert']:10.1f}s   {d['convert']:14.1f}s")
    for q in QUANTS[1:]:
        if q in tm["quantize"]:
            print(f"  quantize {q:9s} {tm['quantize'][q]:10.1f}s   {d[q]:14.1f}s")
    print(f"  hash + commit      {tm.get('hash_and_commit', 0.0):10.1f}s   {'-':>14s}")
    print(f"  total              {ours:10.1f}s   {direct_s:14.1f}s   {ours / direct_s:5.2f}x")
    print(
        f"  (export also ran: merge {tm['merge']:.1f}s, HF reference "
        f"{tm['hf_reference']:.1f}s, parity + stop checks; total {tm['total']:.1f}s)"
    )
    print("\ntype     size       parity  stops   prompt tok/s  gen tok/s")
    rows = {}
    for q, r in exp["files"].items():
        sp = speed(Path(r["path"]), args.threads)
        rows[q] = {**sp, "size": r["size"]}
        print(
            f"  {q:7s} {r['size'] / 2**20:6.0f} MB  {r['parity']['top1_agreement']:6.1%}  "
            f"{r['stop_check']['stopped']:2d}/{r['stop_check']['prompts']:<2d}  "
            f"{sp['prompt_tok_s']:12.0f}  {sp['gen_tok_s']:9.1f}"
        )
    print(json.dumps({"ours_s": ours, "direct_s": direct_s, "per_type": rows}))


if __name__ == "__main__":
    main()
