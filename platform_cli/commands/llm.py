"""`tunestack llm synth|train|prefs|eval|chat|export|deploy`: thin commands over
services.trainer, services.rag_api.rag_synth and services.converter (LLaMA-Factory datasets
and YAML keys; GGUF with llama.cpp's tools)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from platform_cli.context import provision_bases, rag_client, run, settings
from platform_cli.output import console, err_console, fail, progress_bar
from platform_cli.stack import open_stack
from services.common.embedders import EmbedderPool
from services.common.errors import TunestackError
from services.common.logs import quiet_libraries
from services.common.registry import Registry
from services.converter import deploy as dep
from services.converter.export import ExportRequest, ExportResult, export, parse_quants, parse_size
from services.converter.settings import ConvertSettings
from services.rag_api.rag_synth import service as rag_synth
from services.rag_api.rag_synth.teacher import TeacherConfig
from services.rag_api.settings import RagSettings
from services.trainer import service as trainer
from services.trainer.chat import ChatSession
from services.trainer.evaluate import EvalResult
from services.trainer.settings import TrainSettings

if TYPE_CHECKING:  # the training stack (transformers' Trainer, peft) loads in seconds
    from services.trainer.train import TrainResult

app = typer.Typer(
    help="Fine-tune, evaluate, chat with, export and deploy LLMs (LLaMA-Factory datasets "
    "and YAML keys; GGUF with llama.cpp's own converter).",
    no_args_is_help=True,
)


def _train_settings() -> TrainSettings:
    quiet_libraries()
    return TrainSettings()


def _say(msg: str) -> None:
    err_console.print(msg, highlight=False)


@app.command()
def synth(
    out: Annotated[
        Path, typer.Option("--out", help="Dataset folder: gets NAME.json + dataset_info.json.")
    ],
    docs: Annotated[
        Path | None, typer.Option(help="Documents folder, chunked exactly as ingest does.")
    ] = None,
    corpus: Annotated[
        Path | None, typer.Option(help="Corpus file: SQuAD/EmbeddingQA JSON, JSONL, text.")
    ] = None,
    qa: Annotated[
        Path | None,
        typer.Option(
            help="Offline: your QA set (SQuAD, CMRC 2018, EmbeddingQA JSON + answers, or "
            "JSONL question/answer/source), as `rag eval` reads it."
        ),
    ] = None,
    teacher_url: Annotated[
        str | None, typer.Option(help="Teacher LLM: an OpenAI-compatible /v1 base URL.")
    ] = None,
    teacher_model: Annotated[str | None, typer.Option(help="The teacher's model name.")] = None,
    teacher_key_env: Annotated[
        str | None,
        typer.Option(
            metavar="VAR",
            help="Variable holding the teacher's API key (default TUNESTACK_RAG_TEACHER_API_KEY).",
        ),
    ] = None,
    per_chunk: Annotated[int, typer.Option(help="Teacher: questions asked per chunk.")] = 3,
    max_chunks: Annotated[
        int | None, typer.Option(help="Teacher: ask about the first N chunks only.")
    ] = None,
    name: Annotated[str, typer.Option(help="Dataset name in dataset_info.json.")] = "rag_sft",
    fmt: Annotated[str, typer.Option("--format", help="sharegpt | alpaca")] = "sharegpt",
    top_k: Annotated[
        int | None, typer.Option(help="Passages per example (default: the RAG API's top-k).")
    ] = None,
    distractor_only: Annotated[
        float, typer.Option(help="Share of examples without the gold passage (-> abstain).")
    ] = 0.2,
    seed: Annotated[
        int, typer.Option(help="Seeds gold positions and the distractor-only draw.")
    ] = 0,
    embedder: Annotated[
        str | None, typer.Option(help="Its tokenizer sizes --docs chunks (default: ingest's).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """RAG training data (RAFT-style): question + retrieved passages (gold among distractors,
    or distractors only) -> an answer citing them as [1], [2], or saying the documents do not."""
    quiet_libraries()
    s = RagSettings()
    teacher = None
    if teacher_url:
        if not teacher_model:
            fail("--teacher-url needs --teacher-model (the model name the server knows).")
        key = s.teacher_key(teacher_key_env)
        if teacher_key_env and key is None:
            fail(f"--teacher-key-env {teacher_key_env}: that variable is not set.")
        teacher = TeacherConfig(
            base_url=teacher_url,
            model=str(teacher_model),
            api_key=key.get_secret_value() if key else None,
            per_chunk=per_chunk,
        )
    req = rag_synth.SynthRequest(
        out_dir=out,
        docs=docs,
        corpus=corpus,
        qa=qa,
        teacher=teacher,
        name=name,
        format=fmt,  # type: ignore[arg-type]  # checked by SynthRequest.check
        top_k=top_k,
        distractor_only=distractor_only,
        seed=seed,
        max_chunks=max_chunks,
        embedder=embedder,
    )
    run(req.check)
    registry = Registry(s.home_dir)
    if docs is not None:
        provision_bases(registry, "embedder", [embedder or s.default_embedder])
    pool = EmbedderPool(registry, precision=s.embed_precision, capacity=1)
    with progress_bar("Asking the teacher" if teacher else "Building examples") as prog:
        task = prog.task_ids[0]
        res = run(
            lambda: rag_synth.synthesize(
                s, req, pool, lambda d, t: prog.update(task, completed=d, total=t)
            )
        )
    if as_json:
        console.print_json(json.dumps(res.to_dict(), ensure_ascii=False))
        return
    print_synth(res, out)


def print_synth(res: rag_synth.SynthResult, out: Path) -> None:
    skipped = ", ".join(f"{k}: {v}" for k, v in sorted(res.skipped.items()))
    console.print(
        f"{res.examples} examples ({res.abstentions} with distractors only -> abstain) from "
        f"{res.questions} questions over {res.passages} passages, {res.top_k} per example"
        + (f"; skipped {skipped}" if skipped else "")
        + "."
    )
    if res.teacher is not None:
        t = res.teacher
        why = ", ".join(f"{k}: {v}" for k, v in sorted(t.rejected.items()))
        console.print(
            f"Teacher: {t.chunks} chunks ({t.resumed} resumed from {res.progress_file}), "
            f"{t.pairs} usable pairs, {t.junk} chunks without one"
            + (f"; pairs rejected: {why}" if why else "")
            + "."
        )
    for p in res.problems:
        err_console.print(f"[yellow]Not read:[/] {escape(p)}", highlight=False)
    console.print(
        f"Wrote {res.data_file} ({res.format}) and the '{res.name}' entry of "
        f"{res.dataset_info}" + (" (replaced)." if res.replaced else ".")
    )
    console.print(
        f"Train: tunestack llm train --config CONFIG.yaml dataset={res.name} dataset_dir={out}"
    )


@app.command()
def train(
    config: Annotated[Path, typer.Option("--config", "-c", help="LLaMA-Factory style YAML.")],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="key=value overrides, e.g. max_steps=20")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Fine-tune (sft, pt, or preferences: dpo, kto; LoRA, QLoRA, freeze, full); resumable.

    Data-parallel over several processes, GPUs or nodes with LLaMA-Factory's launcher
    variables: NPROC_PER_NODE=2 (or FORCE_TORCHRUN=1), and NNODES, NODE_RANK, MASTER_ADDR,
    MASTER_PORT for several nodes; `deepspeed:` and `fsdp:` keys as in LLaMA-Factory.
    """
    s = _train_settings()
    try:
        res = run(lambda: trainer.train(s, trainer.TrainRequest(config, overrides or []), _say))
    except KeyboardInterrupt:
        fail(
            TunestackError(
                "Training interrupted.",
                hint=f"Rerun `tunestack llm train --config {config}` to resume from the "
                "last checkpoint (checkpoints are written every save_steps).",
            ),
            code=130,
        )
    if res is None:  # a node other than 0 of a multi-node run
        console.print("This node's share of the training is done; node 0 wrote the outputs.")
        return
    if as_json:
        out = {"run": res.run_name, "output_dir": str(res.output_dir), **res.metrics}
        console.print_json(json.dumps(out, default=str))
    else:
        print_train(res)


def print_train(res: TrainResult) -> None:
    m = res.metrics
    t = Table("run", "steps", "loss (first -> last)", "time", "tokens/s", "peak RSS")
    loss = (
        f"{m['first_logged_loss']:.4f} -> {m['last_logged_loss']:.4f}"
        if "first_logged_loss" in m
        else f"{m.get('train_loss', float('nan')):.4f} (mean)"
    )
    t.add_row(
        res.run_name,
        str(m.get("global_step", "")) or "-",
        loss,
        f"{m.get('train_runtime', 0):.1f}s",
        f"{m.get('train_tokens_per_second', 0):.1f}",
        f"{m.get('peak_rss_mb', 0):.0f} MB",
    )
    console.print(t)
    if res.resumed_from:
        console.print(f"Resumed from {res.resumed_from}.")
    console.print(f"Adapter and logs: {res.output_dir}\nRegistered as llm '{res.run_name}'.")


@app.command()
def prefs(
    from_eval: Annotated[
        Path,
        typer.Option(
            "--from-eval",
            metavar="REPORT",
            help="A `rag eval` report folder (or its questions.jsonl), or any JSONL of "
            "question, context, answer, reference (, citation).",
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Dataset folder: gets NAME.json + dataset_info.json.")
    ],
    name: Annotated[str, typer.Option(help="Dataset name in dataset_info.json.")] = "rag_prefs",
    citation_pairs: Annotated[
        bool,
        typer.Option(
            "--citation-pairs/--no-citation-pairs",
            help="Also, for every grounded question, the reference citing its passage over "
            "the same answer citing a passage without it (teaches which passage to cite).",
        ),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Preference pairs from evaluation failures: the cited reference answer over the model's
    wrong, uncited or over-cited one, with the RAG API's exact prompt (train with stage: dpo)."""
    s = _train_settings()
    req = trainer.PrefsRequest(from_eval, out, name, citation_pairs)
    res = run(lambda: trainer.prefs_from_eval(s, req))
    if as_json:
        out_json = {
            "name": res.name,
            "data_file": str(res.data_file),
            "dataset_info": str(res.dataset_info),
            "rows": res.rows,
            "pairs": res.pairs,
            "skipped": res.skipped,
            "ungrounded": res.ungrounded,
            "reasons": res.reasons,
            "citation_pairs": res.citation_pairs,
        }
        console.print_json(json.dumps(out_json))
        return
    why = ", ".join(f"{k}: {v}" for k, v in sorted(res.reasons.items()))
    console.print(
        f"{res.pairs} preference pairs from {res.rows} rows ({why}"
        + (f"; right over wrong passage: {res.citation_pairs}" if res.citation_pairs else "")
        + f"); {res.skipped} answers were right and cited only the right passages"
        + (
            f"; {res.ungrounded} left out (answer-bearing passage not retrieved)"
            if res.ungrounded
            else ""
        )
        + f".\nWrote {res.data_file} and the '{res.name}' entry of "
        f"{res.dataset_info}" + (" (replaced)." if res.replaced else ".")
    )
    console.print(
        f"Train: tunestack llm train --config CONFIG.yaml stage=dpo dataset={res.name} "
        f"dataset_dir={out}"
    )


@app.command("eval")
def eval_(
    run_name: Annotated[str, typer.Argument(metavar="RUN", help="A trained run, or a base model.")],
    dataset: Annotated[str, typer.Option(help="NAME[,NAME...] from dataset_info.json.")],
    dataset_dir: Annotated[
        Path | None, typer.Option(help="Folder with dataset_info.json (default: the run's).")
    ] = None,
    max_samples: Annotated[int | None, typer.Option(help="Evaluate the first N records.")] = None,
    max_new_tokens: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    output_dir: Annotated[Path | None, typer.Option(help="Default: reports/<run>/.")] = None,
    template: Annotated[str | None, typer.Option(help="Override the chat template.")] = None,
    system: Annotated[
        str | None, typer.Option(help="System prompt for records without one.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Generate answers for a dataset; BLEU-4 and ROUGE-1/2/L as LLaMA-Factory reports them."""
    s = _train_settings()
    req = trainer.EvalLlmRequest(
        run=run_name,
        datasets=[d.strip() for d in dataset.split(",") if d.strip()],
        dataset_dir=dataset_dir,
        max_samples=max_samples,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        output_dir=output_dir,
        template=template,
        system=system,
    )
    with progress_bar("Generating") as prog:
        task = prog.task_ids[0]
        res = run(
            lambda: trainer.evaluate_llm(
                s, req, lambda d, n: prog.update(task, completed=d, total=n)
            )
        )
    if as_json:
        out = {"output_dir": str(res.output_dir), **res.metrics}
        console.print_json(json.dumps(out, ensure_ascii=False))
    else:
        print_llm_eval(run_name, res)


def print_llm_eval(run_name: str, res: EvalResult) -> None:
    m = res.metrics
    t = Table("model", "samples", "BLEU-4", "ROUGE-1", "ROUGE-2", "ROUGE-L", "time")
    t.add_row(
        run_name,
        str(m["num_samples"]),
        *(f"{m[f'predict_{k}']:.2f}" for k in ("bleu-4", "rouge-1", "rouge-2", "rouge-l")),
        f"{m['predict_runtime']:.1f}s",
    )
    console.print(t)
    console.print(f"Predictions and scores: {res.output_dir}")


@app.command()
def chat(
    run_name: Annotated[str, typer.Argument(metavar="RUN", help="A trained run, or a base model.")],
    system: Annotated[str | None, typer.Option(help="System prompt (default: the run's).")] = None,
    template: Annotated[str | None, typer.Option(help="Override the chat template.")] = None,
    max_new_tokens: Annotated[int | None, typer.Option()] = None,
    temperature: Annotated[float, typer.Option(help="0 = greedy.")] = 0.0,
    message: Annotated[
        list[str] | None,
        typer.Option("--message", "-m", help="Send this message (repeatable) and exit."),
    ] = None,
) -> None:
    """Chat with base + adapter using the chat template; /reset clears history, /exit quits."""
    s = _train_settings()
    with err_console.status(f"Loading {run_name}..."):
        session = run(
            lambda: trainer.open_chat(
                s,
                run_name,
                template=template,
                system=system,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
            )
        )
    chat_loop(session, run_name, message or [])


def _say_out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def chat_loop(session: ChatSession, run_name: str, messages: list[str]) -> None:
    """Send `messages` and exit, or read turns from stdin until EOF or /exit."""

    def turn(text: str) -> None:
        _say_out("assistant> ")
        r = session.reply(text, on_text=_say_out)
        _say_out("\n" if r.stop_reason == "stop" else " [max_new_tokens reached]\n")

    for m in messages:
        turn(m)
    if messages:
        return
    interactive = sys.stdin.isatty()
    if interactive:
        err_console.print(
            f"Chatting with [bold]{run_name}[/]. /reset clears the history, /exit quits."
        )
    while True:
        if interactive:
            _say_out("you> ")
        line = sys.stdin.readline()
        if not line:
            break
        text = line.strip()
        if text in ("/exit", "/quit", "exit", "quit"):
            break
        if text == "/reset":
            session.reset()
            err_console.print("History cleared.")
        elif text:
            turn(text)


@app.command("export")
def export_cmd(
    run_name: Annotated[
        str, typer.Argument(metavar="RUN", help="A trained run (or a base model) in the registry.")
    ],
    quant: Annotated[
        str | None,
        typer.Option("--quant", help="GGUF types, e.g. f16,q8_0,q4_k_m,q5_k_m."),
    ] = None,
    export_size: Annotated[
        str | None, typer.Option("--export-size", help="Max shard size of merged/ (2GB).")
    ] = None,
    lora_gguf: Annotated[
        bool, typer.Option("--lora-gguf", help="Also write the adapter as a GGUF LoRA.")
    ] = False,
    messages: Annotated[
        Path | None,
        typer.Option(help="JSON list of {role, content}: MESSAGE examples for the Modelfile."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Merge the adapter, convert to GGUF (llama.cpp), quantize, gate on parity, Modelfile."""
    quiet_libraries()
    s = ConvertSettings()
    req = run(
        lambda: ExportRequest(
            run=run_name,
            quants=parse_quants(quant or s.quants),
            export_size=parse_size(export_size or s.export_size),
            lora_gguf=lora_gguf,
            messages_file=messages,
        )
    )
    res = run(lambda: export(s, req, _say))
    if as_json:
        files = {q: f.model_dump(mode="json") for q, f in res.files.items()}
        console.print_json(json.dumps({"run": run_name, "ok": res.ok, "files": files}))
    else:
        print_export(res)
    if not res.ok:
        fail(
            TunestackError(
                "Some exported files failed their checks: " + "; ".join(res.problems),
                hint="They are recorded in meta.json and will not be deployed; deploy a type "
                "that passed.",
            )
        )


def print_export(res: ExportResult) -> None:
    t = Table("type", "file", "size", "parity (top-1)", "tokenizer", "stops", "ok")
    for q, f in res.files.items():
        t.add_row(
            q,
            f.file,
            f"{f.size / 2**20:.0f} MB",
            f"{f.parity.top1_agreement:.1%} (>= {f.parity.threshold:.0%})",
            f.parity.tokenizer_match,
            f"{f.stop_check.stopped}/{f.stop_check.prompts}",
            "[green]ok[/]" if f.ok else "[red]NOT OK[/]",
        )
    console.print(t)
    console.print(f"Modelfile: {res.modelfile}   ({res.seconds:.0f}s)")


@app.command()
def deploy(
    run_name: Annotated[str, typer.Argument(metavar="RUN", help="An exported run.")],
    to: Annotated[str, typer.Option("--to", help="ollama | llamacpp")] = "llamacpp",
    name: Annotated[
        str | None, typer.Option(help="Model name on the server (default: RUN).")
    ] = None,
    quant: Annotated[str, typer.Option(help="Which exported GGUF type.")] = "q8_0",
    adapter: Annotated[
        bool, typer.Option("--adapter", help="Ollama: base GGUF + the --lora-gguf ADAPTER.")
    ] = False,
    no_switch: Annotated[
        bool, typer.Option("--no-switch", help="Do not switch the RAG API to it.")
    ] = False,
    api_url: Annotated[
        str | None, typer.Option(help="RAG API to switch (default: TUNESTACK_API_URL).")
    ] = None,
) -> None:
    """Register the export with Ollama or (re)start llama.cpp on it; switch the RAG API."""
    s = settings()
    model = name or run_name
    if to not in ("ollama", "llamacpp"):
        fail(f"--to {to}: use ollama or llamacpp.")
    target = run(lambda: open_stack(s, None).serving_target(to, adapter=adapter))
    client = rag_client(s)
    if api_url:
        client.base_url = api_url.rstrip("/")
    switch = None if no_switch else dep.ApiSwitch(client)
    spec = dep.DeploySpec(run_name, quant.lower(), model)
    run(lambda: dep.validate_model_name(model))
    res = run(lambda: dep.deploy(Registry(s.home_dir), spec, target, switch, _say))
    console.print(
        f"[green]Deployed[/] {run_name} ({res.quant}) to {to} as '{model}'. "
        f"Check: {res.installed.response!r}"
    )
    if res.switched:
        console.print(f"The RAG API now answers with '{model}' ({res.installed.base_url}).")
    elif not no_switch:
        console.print("No RAG API is running here; it will use the model when started.")
