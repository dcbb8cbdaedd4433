"""`tunestack llm export RUN`: merge, convert with llama.cpp's converter, quantize with
llama.cpp, gate each file on parity and stopping, write Modelfiles, record everything.

Everything is built in a staging folder inside the run's folder and moved into place file
by file (each move is an atomic rename on one filesystem); meta.json, written last, is
what makes the new export visible and records each file's size and sha256, so a reader
that finds a file not matching meta.json knows it was never committed. A server that is
serving an older file keeps its open copy (rename never touches an open inode).

This module stages, orchestrates, commits and records (`export`); the steps are
services.converter.convert (HF -> GGUF, quantize, LoRA GGUF), .gates (parity and stop
check) and .modelfiles (the Modelfiles).
"""

from __future__ import annotations

import gc
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.common import atomic
from services.common.errors import BadInput, disk_full_names
from services.common.records import ExportFile, ExportRun, FileRef, LlmRecord, now
from services.common.registry import Entry, Registry, versions
from services.converter import gates, modelfiles
from services.converter.convert import GgufBuild, base_entry, base_gguf_of
from services.converter.modelfiles import AdapterSource, ModelfileSpec, TurnTokens, Written
from services.converter.quantize import FTYPES
from services.converter.settings import LLAMA_CPP_SDIST_SHA256, LLAMA_CPP_VERSION, ConvertSettings
from services.converter.toolchain import scripts_dir, sha256_file
from services.trainer.inference import LoadedLLM, load_llm

Say = Callable[[str], None]


@dataclass
class ExportRequest:
    """What `tunestack llm export` asks for (parse_quants / parse_size check the strings)."""

    run: str
    quants: list[str]
    export_size: str = "2GB"  # max shard size of merged/
    lora_gguf: bool = False  # also write the adapter as a GGUF LoRA (Ollama ADAPTER)
    messages_file: Path | None = None  # JSON list of {role, content}: Modelfile MESSAGEs


@dataclass
class ExportResult:
    run: str
    files: dict[str, ExportFile]  # what meta.json's export.files now holds
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


@dataclass
class _Job:
    """One export in progress: its run, its staging folder, what it has timed so far."""

    settings: ConvertSettings
    req: ExportRequest
    registry: Registry
    entry: Entry[LlmRecord]
    base: Entry[LlmRecord]  # the run's base (the entry itself for a base model)
    scripts: Path
    messages: list[dict[str, str]]
    stage: Path
    t_start: float
    timings: dict[str, Any] = field(default_factory=dict)

    @property
    def threads(self) -> int:
        return self.settings.threads or os.cpu_count() or 1

    @property
    def base_gguf(self) -> Path | None:
        return base_gguf_of(self.base)


@dataclass
class _Merged:
    dir: Path
    chat_jinja: str  # the run's chat template (Jinja), translated for the Modelfile


def export(settings: ConvertSettings, req: ExportRequest, say: Say = print) -> ExportResult:
    """Export `req.run`: every step builds in a staging folder that is removed whatever
    happens; only `_commit` moves files into the run's folder, and meta.json comes last."""
    job = _begin(settings, req)
    try:
        # a full disk names the run's folder: the staging folder in it is gone by the time
        # anyone reads the message
        with disk_full_names(job.entry.dir, settings.home_dir):
            (job.stage / "gguf").mkdir(parents=True)
            return _export(job, say)
    finally:
        shutil.rmtree(job.stage, ignore_errors=True)


def _export(job: _Job, say: Say) -> ExportResult:
    req, settings = job.req, job.settings
    llm, merged = _merge(job, say)
    build = GgufBuild(
        job.scripts, merged.dir, job.stage / "gguf", req.run, job.threads, job.base_gguf
    )
    produced = build.build(req.quants, job.timings, say)
    inputs = gates.prepare(llm, settings, job.timings, say)
    spec = ModelfileSpec(
        req.run,
        merged.chat_jinja,
        TurnTokens.of(llm),
        job.entry.record.default_system or None,
        job.messages,
    )
    del llm  # the HF model goes before llama.cpp opens any file
    gc.collect()
    gated, problems = gates.check_files(produced, req.quants, inputs, settings, job.threads, say)
    lora = _lora(job, build, say) if req.lora_gguf else None
    written = _write_modelfiles(job, spec, gated, lora, say)
    files, record = _commit(job, produced, gated, lora, merged, written, problems)
    _record(job, record)
    modelfile = job.entry.dir / "Modelfile"
    seconds = record.timings_s["total"]
    return ExportResult(req.run, files, modelfile, not problems, seconds, problems)


def _begin(settings: ConvertSettings, req: ExportRequest) -> _Job:
    """Check the request, then make the staging folder (stale ones of killed runs go)."""
    t_start = time.monotonic()
    registry = Registry(settings.home_dir)
    entry: Entry[LlmRecord] = registry.ensure("llm", req.run)
    scripts = scripts_dir(settings)
    messages = modelfiles.read_messages(req.messages_file)
    if req.lora_gguf and not entry.record.is_lora:
        raise BadInput(f"--lora-gguf needs a LoRA run; '{req.run}' is not one.")
    base = base_entry(registry, entry)
    atomic.sweep_stale(entry.dir)
    stage = atomic.temp_sibling(entry.dir / "export")  # made by export(), inside its cleanup
    return _Job(settings, req, registry, entry, base, scripts, messages, stage, t_start)


def _merge(job: _Job, say: Say) -> tuple[LoadedLLM, _Merged]:
    """The run's adapter merged into its base (in memory), saved as an HF folder."""
    t0 = time.monotonic()
    say(f"Merging {job.req.run} into its base (peft merge_and_unload)...")
    llm = load_llm(job.req.run, job.registry)
    merged = job.stage / "merged"
    llm.model.save_pretrained(merged, max_shard_size=job.req.export_size, safe_serialization=True)
    llm.tokenizer.save_pretrained(merged)
    job.timings["merge"] = round(time.monotonic() - t0, 2)
    template_file = merged / "chat_template.jinja"
    chat_jinja = (
        template_file.read_text(encoding="utf-8")
        if template_file.is_file()
        else str(getattr(llm.tokenizer, "chat_template", "") or "")
    )
    return llm, _Merged(merged, chat_jinja)


def _lora(job: _Job, build: GgufBuild, say: Say) -> Path:
    rec = job.entry.record
    return build.lora(
        Path(rec.base_model_path or ""), Path(str(rec.adapter_path)), job.timings, say
    )


def _write_modelfiles(
    job: _Job, spec: ModelfileSpec, gated: dict[str, gates.Gated], lora: Path | None, say: Say
) -> Written:
    ok_quants = [q for q in job.req.quants if gated[q].ok]
    adapter = None
    if lora is not None:
        # re-read: the base's served copy may have been made while this export ran
        base_serve = job.registry.get("llm", job.base.name).record.serve_path
        adapter = AdapterSource(Path(str(base_serve or job.base_gguf or "")), lora.name)
    return modelfiles.write(job.stage, spec, job.req.quants, ok_quants, say, adapter=adapter)


# ---- commit: move into place, then meta.json ----------------------------------------------


def _file_ref(path: Path, final: Path) -> dict[str, Any]:
    return {
        "path": str(final),
        "file": final.name,
        "size": path.stat().st_size,
        "sha256": sha256_file(path),
    }


def _commit(
    job: _Job,
    produced: dict[str, Path],
    gated: dict[str, gates.Gated],
    lora: Path | None,
    merged: _Merged,
    written: Written,
    problems: list[str],
) -> tuple[dict[str, ExportFile], ExportRun]:
    """Hash and move every staged file into the run's folder; the record to write."""
    t_commit = time.monotonic()
    gguf_dir = job.entry.dir / "gguf"
    gguf_dir.mkdir(exist_ok=True)
    files: dict[str, ExportFile] = {}
    for q, path in produced.items():
        if q in job.req.quants:
            g = gated[q]
            final = gguf_dir / path.name
            files[q] = ExportFile(
                **_file_ref(path, final), quant=q, parity=g.parity, stop_check=g.stop_check, ok=g.ok
            )
            os.replace(path, final)
    lora_ref = None
    if lora is not None:
        final = gguf_dir / lora.name
        lora_ref = FileRef(**_file_ref(lora, final))
        os.replace(lora, final)
    merged_record = _move_merged(job, merged)
    os.replace(job.stage / "Modelfile", job.entry.dir / "Modelfile")
    if written.adapter:
        name = modelfiles.ADAPTER_MODELFILE
        os.replace(job.stage / name, job.entry.dir / name)
    job.timings["hash_and_commit"] = round(time.monotonic() - t_commit, 2)
    record = _export_run(job, files, lora_ref, merged_record, written, problems)
    return files, record


def _move_merged(job: _Job, merged: _Merged) -> dict[str, Any]:
    """merged/ replaces the previous one in one step (atomic.swap_dir)."""
    files = [{"file": p.name, "size": p.stat().st_size} for p in sorted(merged.dir.iterdir())]
    final = job.entry.dir / "merged"
    atomic.swap_dir(merged.dir, final)
    return {"path": str(final), "max_shard_size": job.req.export_size, "files": files}


def _export_run(
    job: _Job,
    files: dict[str, ExportFile],
    lora: FileRef | None,
    merged: dict[str, Any],
    written: Written,
    problems: list[str],
) -> ExportRun:
    base_gguf = job.base_gguf
    seconds = round(time.monotonic() - job.t_start, 2)
    return ExportRun(
        created=now(),
        quants=job.req.quants,
        files=files,
        lora_gguf=lora,
        merged=merged,
        modelfile=written.record(job.entry.dir),
        toolchain={
            "llama_cpp_python": LLAMA_CPP_VERSION,
            "sdist_sha256": LLAMA_CPP_SDIST_SHA256,
            "converter": "vendor/llama.cpp/convert_hf_to_gguf.py (unmodified)",
            "quantizer": "llama_model_quantize (llama-cpp-python)",
            "tokenizer": f"carried from {base_gguf}" if base_gguf else "converter",
        },
        timings_s={**job.timings, "total": seconds},
        ok=not problems,
        problems=problems,
        versions=versions(),
    )


def _record(job: _Job, export_run: ExportRun) -> Entry[LlmRecord]:
    """meta.json's `export`, written under the entry's lock on a fresh read, so a write
    made while the export ran (a deploy, an eval) is kept."""

    def put(record: LlmRecord) -> LlmRecord:
        record.export = export_run
        return record

    return job.registry.update("llm", job.req.run, put)
