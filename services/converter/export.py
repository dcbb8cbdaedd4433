"""`tunestack llm export RUN`: merge, convert with llama.cpp's converter, quantize with
llama.cpp, gate each file on parity and stopping, write Modelfiles, record everything.

Everything is built in a staging folder inside the run's folder and moved into place file
by file (each move is an atomic rename on one filesystem); meta.json, written last, is
what makes the new export visible and records each file's size and sha256, so a reader
that finds a file not matching meta.json knows it was never committed. A server that is
serving an older file keeps its open copy (rename never touches an open inode).
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.common import atomic
from services.common.errors import BadInput, TunestackError
from services.common.registry import Entry, Registry, versions
from services.converter import modelfile as mf
from services.converter import parity
from services.converter.ollama_template import UntranslatableTemplate, as_dict, translate
from services.converter.quantize import FTYPES, quantize
from services.converter.settings import LLAMA_CPP_SDIST_SHA256, LLAMA_CPP_VERSION, ConvertSettings
from services.converter.toolchain import scripts_dir, sha256_file

Say = Callable[[str], None]
CONVERTER_TYPES = ("f32", "f16", "bf16")  # written by convert_hf_to_gguf.py directly
DEFAULT_DEPLOY_QUANT = "q8_0"


@dataclass
class ExportResult:
    run: str
    files: dict[str, dict[str, Any]]
    modelfile: Path | None
    ok: bool
    seconds: float
    problems: list[str] = field(default_factory=list)


def parse_quants(value: str) -> list[str]:
    out = []
    for q in (p.strip().lower() for p in value.split(",")):
        if not q:
            continue
        if q not in FTYPES:
            raise BadInput(f"Unknown GGUF type '{q}'.", hint="Use some of: " + ", ".join(FTYPES))
        if q not in out:
            out.append(q)
    if not out:
        raise BadInput("No --quant given.", hint="e.g. --quant f16,q8_0,q4_k_m")
    return out


def parse_size(value: str) -> str:
    """'2GB' / '500MB' as transformers' max_shard_size accepts it."""
    v = value.strip().upper().replace(" ", "")
    if not v or not v[0].isdigit() or not v.endswith(("B", "KB", "MB", "GB", "KIB", "MIB", "GIB")):
        raise BadInput(f"--export-size '{value}' is not a size.", hint="e.g. 2GB or 500MB")
    return v


def base_gguf_of(entry: Entry, registry: Registry) -> Path | None:
    """The GGUF a run's base came from, whose tokenizer the export must carry."""
    base_name = entry.meta.get("base_model")
    meta = registry.get("llm", str(base_name)).meta if base_name else entry.meta
    src = Path(str(meta.get("model_path", "")))
    return src if src.is_file() and src.suffix == ".gguf" else None


def run_converter(
    scripts: Path,
    args: list[str],
    *,
    tokenizer_from: Path | None = None,
    chat_template: Path | None = None,
    script: str = "convert_hf_to_gguf.py",
) -> float:
    """llama.cpp's converter in a child process (its own sys.path: the sdist's gguf-py)."""
    cmd = [
        sys.executable,
        "-m",
        "services.converter.hf_to_gguf_runner",
        "--scripts",
        str(scripts),
        "--script",
        script,
    ]
    if tokenizer_from is not None:
        cmd += ["--tokenizer-from", str(tokenizer_from)]
    if chat_template is not None:
        cmd += ["--chat-template-file", str(chat_template)]
    t0 = time.monotonic()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.run([*cmd, "--", *args], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        tail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-12:])
        hint = "See the converter's message above."
        if "sentencepiece" in tail:
            hint = "This model's converter path needs sentencepiece: pip install sentencepiece"
        raise TunestackError(f"llama.cpp's {script} failed:\n{tail}", hint=hint)
    return time.monotonic() - t0


def _file_record(path: Path, final: Path) -> dict[str, Any]:
    return {
        "path": str(final),
        "file": final.name,
        "size": path.stat().st_size,
        "sha256": sha256_file(path),
    }


def _read_messages(path: Path | None) -> list[dict[str, str]]:
    if path is None:
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BadInput(f"--messages {path} is not readable JSON: {e}") from e
    if not isinstance(data, list) or not all(
        isinstance(m, dict)
        and m.get("role") in ("user", "assistant", "system")
        and isinstance(m.get("content"), str)
        for m in data
    ):
        raise BadInput(
            f"--messages {path} must be a JSON list of {{role, content}} objects.",
            hint='e.g. [{"role": "user", "content": "Hi"}, {"role": "assistant", ...}]',
        )
    return [{"role": m["role"], "content": m["content"]} for m in data]


def export_run(
    run: str,
    settings: ConvertSettings,
    *,
    quants: list[str],
    export_size: str,
    lora_gguf: bool = False,
    messages_file: Path | None = None,
    say: Say = print,
) -> ExportResult:
    from services.trainer.inference import load_llm

    t_start = time.monotonic()
    registry = Registry(settings.home_dir)
    entry = registry.get("llm", run)
    scripts = scripts_dir(settings)
    threads = settings.threads or os.cpu_count() or 1
    messages = _read_messages(messages_file)
    is_lora = entry.meta.get("finetuning_type") == "lora" and bool(entry.meta.get("adapter_path"))
    if lora_gguf and not is_lora:
        raise BadInput(f"--lora-gguf needs a LoRA run; '{run}' is not one.")
    atomic.sweep_stale(entry.dir)
    stage = entry.dir / f".tmp-export-{uuid.uuid4().hex[:8]}"
    (stage / "gguf").mkdir(parents=True)
    timings: dict[str, Any] = {}
    try:
        # ---- merge -------------------------------------------------------------------
        t0 = time.monotonic()
        say(f"Merging {run} into its base (peft merge_and_unload)...")
        llm = load_llm(run, registry)
        merged = stage / "merged"
        llm.model.save_pretrained(merged, max_shard_size=export_size, safe_serialization=True)
        llm.tokenizer.save_pretrained(merged)
        timings["merge"] = round(time.monotonic() - t0, 2)
        template_file = merged / "chat_template.jinja"
        chat_jinja = (
            template_file.read_text(encoding="utf-8")
            if template_file.is_file()
            else str(getattr(llm.tokenizer, "chat_template", "") or "")
        )

        # ---- convert + quantize ------------------------------------------------------
        base_gguf = base_gguf_of(entry, registry)
        first = next((q for q in quants if q in CONVERTER_TYPES), "f16")
        conv_out = stage / "gguf" / f"{run}.{first}.gguf"
        say(
            f"Converting to GGUF {first} with llama.cpp's convert_hf_to_gguf.py"
            + (f" (tokenizer carried from {base_gguf.name})" if base_gguf else "")
            + "..."
        )
        timings["convert"] = round(
            run_converter(
                scripts,
                [str(merged), "--outfile", str(conv_out), "--outtype", first],
                tokenizer_from=base_gguf,
                chat_template=template_file if base_gguf and template_file.is_file() else None,
            ),
            2,
        )
        produced: dict[str, Path] = {first: conv_out}
        timings["quantize"] = {}
        for q in quants:
            if q in produced:
                continue
            out = stage / "gguf" / f"{run}.{q}.gguf"
            t0 = time.monotonic()
            if q in CONVERTER_TYPES:
                run_converter(
                    scripts,
                    [str(merged), "--outfile", str(out), "--outtype", q],
                    tokenizer_from=base_gguf,
                    chat_template=template_file if base_gguf else None,
                )
            else:
                say(f"Quantizing {first} -> {q} with llama.cpp...")
                quantize(conv_out, out, q, threads=threads)
            timings["quantize"][q] = round(time.monotonic() - t0, 2)
            produced[q] = out

        # ---- parity gate + stop check ------------------------------------------------
        stop_ids = llm.template.stop_token_ids(llm.tokenizer)
        n_par = max(1, min(settings.parity_prompts, len(parity.PROMPTS)))
        say(f"Parity gate: {n_par} prompts x {settings.parity_tokens} greedy tokens...")
        t0 = time.monotonic()
        refs = parity.hf_references(
            llm, list(parity.PROMPTS[:n_par]), settings.parity_tokens, stop_ids
        )
        timings["hf_reference"] = round(time.monotonic() - t0, 2)
        n_stop = max(1, min(settings.stop_prompts, len(parity.PROMPTS)))
        stop_prompts = [
            llm.tokenizer(parity.chat_prompt(llm, q), add_special_tokens=False)["input_ids"]
            for q in parity.PROMPTS[:n_stop]
        ]
        tokenizer_info = {
            "eos_token": llm.tokenizer.eos_token,
            "bos_token": llm.tokenizer.bos_token,
            "stop_words": llm.template.stop_words,
            "default_system": llm.template.default_system,
        }
        del llm
        gc.collect()
        files: dict[str, dict[str, Any]] = {}
        problems = []
        for q, path in produced.items():
            if q not in quants:
                continue
            par = parity.gguf_parity(path, refs, q, threads, stop_ids)
            stop = parity.stop_check(
                path, stop_prompts, stop_ids, threads, settings.stop_max_tokens
            )
            ok = bool(par["ok"] and stop["ok"])
            say(
                f"  {q:7s} parity {par['top1_agreement']:.1%} (>= {par['threshold']:.0%}), "
                f"stops {stop['stopped']}/{stop['prompts']} -> {'ok' if ok else 'NOT OK'}"
            )
            if not par["ok"]:
                problems.append(
                    f"{q}: parity {par['top1_agreement']:.1%} < "
                    f"{par['threshold']:.0%} (tokenizer {par['tokenizer_match']})"
                )
            if not stop["ok"]:
                problems.append(f"{q}: stopped in {stop['stopped']}/{stop['prompts']} prompts")
            files[q] = {"quant": q, "parity": par, "stop_check": stop, "ok": ok}

        # ---- LoRA as GGUF (Ollama ADAPTER) --------------------------------------------
        lora_path = None
        if lora_gguf:
            say("Converting the adapter with llama.cpp's convert_lora_to_gguf.py...")
            lora_path = stage / "gguf" / f"{run}.lora.f16.gguf"
            base_hf = Path(str(entry.meta.get("base_model_path", "")))
            timings["lora_gguf"] = round(
                run_converter(
                    scripts,
                    [
                        "--base",
                        str(base_hf),
                        "--outfile",
                        str(lora_path),
                        "--outtype",
                        "f16",
                        str(entry.meta["adapter_path"]),
                    ],
                    script="convert_lora_to_gguf.py",
                ),
                2,
            )

        # ---- Modelfiles --------------------------------------------------------------
        system = entry.meta.get("default_system") or None
        go = None
        template_note = None
        try:
            go = translate(
                chat_jinja,
                bos_token=tokenizer_info["bos_token"] or "",
                eos_token=tokenizer_info["eos_token"] or "",
            )
        except UntranslatableTemplate as e:
            template_note = e.message
            say(f"  warning: {e.message}")
        stops = list(go.stops) if go else []
        for w in tokenizer_info["stop_words"] or []:
            if w not in stops:
                stops.append(w)
        ok_quants = [q for q in quants if files[q]["ok"]]
        default_q = (
            DEFAULT_DEPLOY_QUANT
            if DEFAULT_DEPLOY_QUANT in ok_quants
            else (ok_quants[0] if ok_quants else quants[0])
        )
        header = (
            f"Written by tunestack llm export {run}; deploy: tunestack llm deploy {run}\n"
            f"Parity/stop checks: see meta.json (export.files)."
        )
        fields = mf.Modelfile(
            from_=f"./gguf/{run}.{default_q}.gguf",
            template=go.template if go else None,
            system=system,
            parameters={"stop": stops} if stops else {},
            messages=messages,
        )
        atomic.write_text(stage / "Modelfile", mf.render(fields, header))
        adapter_modelfile = None
        if lora_path is not None:
            base_serve = Path(
                str(
                    registry.get("llm", str(entry.meta["base_model"])).meta.get("serve_path")
                    or base_gguf
                    or ""
                )
            )
            afields = mf.Modelfile(
                **{
                    **fields.__dict__,
                    "from_": str(base_serve),
                    "adapters": [f"./gguf/{lora_path.name}"],
                }
            )
            atomic.write_text(stage / "Modelfile.adapter", mf.render(afields, header))
            adapter_modelfile = entry.dir / "Modelfile.adapter"

        # ---- commit: move into place, then meta.json ---------------------------------
        t_commit = time.monotonic()
        gguf_dir = entry.dir / "gguf"
        gguf_dir.mkdir(exist_ok=True)
        for q, path in produced.items():
            final = gguf_dir / path.name
            if q in quants:
                files[q] = {**_file_record(path, final), **files[q]}
                os.replace(path, final)
        lora_record = None
        if lora_path is not None:
            final = gguf_dir / lora_path.name
            lora_record = _file_record(lora_path, final)
            os.replace(lora_path, final)
        merged_files = [
            {"file": p.name, "size": p.stat().st_size} for p in sorted(merged.iterdir())
        ]
        final_merged = entry.dir / "merged"
        old = entry.dir / f".old-merged-{uuid.uuid4().hex[:8]}"
        if final_merged.exists():
            os.replace(final_merged, old)
        os.replace(merged, final_merged)
        shutil.rmtree(old, ignore_errors=True)
        os.replace(stage / "Modelfile", entry.dir / "Modelfile")
        if adapter_modelfile is not None:
            os.replace(stage / "Modelfile.adapter", adapter_modelfile)

        timings["hash_and_commit"] = round(time.monotonic() - t_commit, 2)
        seconds = round(time.monotonic() - t_start, 2)
        export_meta = {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "quants": quants,
            "files": files,
            "lora_gguf": lora_record,
            "merged": {
                "path": str(final_merged),
                "max_shard_size": export_size,
                "files": merged_files,
            },
            "modelfile": {
                "path": str(entry.dir / "Modelfile"),
                "from": fields.from_,
                "default_quant": default_q,
                "template": as_dict(go) if go else None,
                "template_note": template_note,
                "stop": stops,
                "system": system,
                "messages": len(messages),
                "adapter_modelfile": str(adapter_modelfile) if adapter_modelfile else None,
            },
            "toolchain": {
                "llama_cpp_python": LLAMA_CPP_VERSION,
                "sdist_sha256": LLAMA_CPP_SDIST_SHA256,
                "converter": "vendor/llama.cpp/convert_hf_to_gguf.py (unmodified)",
                "quantizer": "llama_model_quantize (llama-cpp-python)",
                "tokenizer": f"carried from {base_gguf}" if base_gguf else "converter",
            },
            "timings_s": {**timings, "total": seconds},
            "ok": not problems,
            "problems": problems,
            "versions": versions(),
        }
        meta = registry.get("llm", run).meta  # re-read: never clobber a concurrent write
        meta = {
            **meta,
            "export": export_meta,
            "gguf": {q: r["path"] for q, r in files.items()},
            "exports": [
                {
                    "name": q,
                    "format": "gguf",
                    "path": r["path"],
                    "size": r["size"],
                    "sha256": r["sha256"],
                    "ok": r["ok"],
                    "parity": r["parity"]["top1_agreement"],
                    "stopped": f"{r['stop_check']['stopped']}/{r['stop_check']['prompts']}",
                }
                for q, r in files.items()
            ],
            "parity": {
                q: {**r["parity"], "stop_rate": r["stop_check"]["rate"], "ok": r["ok"]}
                for q, r in files.items()
            },
        }
        registry.write("llm", run, meta, replace=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return ExportResult(run, files, entry.dir / "Modelfile", not problems, seconds, problems)
