"""`tunestack llm export|deploy`: thin commands over services.converter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from platform_cli.output import console, err_console, fail
from services.common.errors import BadInput, TunestackError
from services.common.logs import quiet_libraries
from services.common.registry import Registry, validate_name


def _say(msg: str) -> None:
    err_console.print(msg, highlight=False)


def _settings() -> Any:
    from services.converter.settings import ConvertSettings

    quiet_libraries()
    return ConvertSettings()


def export(
    run: Annotated[str, typer.Argument(help="A trained run (or a base model) in the registry.")],
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
    from services.converter.export import export_run, parse_quants, parse_size

    s = _settings()
    try:
        res = export_run(
            run,
            s,
            quants=parse_quants(quant or s.quants),
            export_size=parse_size(export_size or s.export_size),
            lora_gguf=lora_gguf,
            messages_file=messages,
            say=_say,
        )
    except TunestackError as e:
        fail(e)
    if as_json:
        console.print_json(json.dumps({"run": run, "ok": res.ok, "files": res.files}))
    else:
        t = Table("type", "file", "size", "parity (top-1)", "stops", "ok")
        for q, r in res.files.items():
            t.add_row(
                q,
                r["file"],
                f"{r['size'] / 2**20:.0f} MB",
                f"{r['parity']['top1_agreement']:.1%} (>= {r['parity']['threshold']:.0%})",
                f"{r['stop_check']['stopped']}/{r['stop_check']['prompts']}",
                "[green]ok[/]" if r["ok"] else "[red]NOT OK[/]",
            )
        console.print(t)
        console.print(f"Modelfile: {res.modelfile}   ({res.seconds:.0f}s)")
    if not res.ok:
        fail(
            TunestackError(
                "Some exported files failed their checks: " + "; ".join(res.problems),
                hint="They are recorded in meta.json and will not be deployed; deploy a type "
                "that passed.",
            )
        )


def deploy(
    run: Annotated[str, typer.Argument(help="An exported run.")],
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
        str | None,
        typer.Option(envvar="TUNESTACK_API_URL", help="RAG API to switch (default: local)."),
    ] = None,
) -> None:
    """Register the export with Ollama or (re)start llama.cpp on it; switch the RAG API."""
    from platform_cli.settings import StackSettings
    from services.converter import deploy as dep

    s = _settings()
    stack = StackSettings()
    model = name or run
    try:
        validate_name(model.replace(":", "-").replace("/", "-"))
        if to not in ("ollama", "llamacpp"):
            raise BadInput(f"--to {to}: use ollama or llamacpp.")
        if to == "llamacpp" and stack.chroma_url_override:
            # a compose job container: a llama.cpp server started here dies with it
            raise BadInput(
                "--to llamacpp restarts the local llama.cpp server; this is a job container.",
                hint="In docker mode deploy with --to ollama, or run the stack with --mode local.",
            )
        registry = Registry(s.home_dir)
        entry = registry.get("llm", run)
        f = dep.exported_file(entry, quant.lower())
        if to == "ollama":
            info = dep.deploy_ollama(
                registry, entry, model, f, s.ollama_host, _say, adapter=adapter
            )
        else:
            from platform_cli.deploy_local import deploy_llamacpp

            info = deploy_llamacpp(stack, f.path, model, _say)
        info["quant"] = f.quant
        switched = None
        if not no_switch:
            import os

            switched = dep.switch_rag_api(
                api_url or stack.api_url,
                os.environ.get("TUNESTACK_API_KEY"),
                info["base_url"],
                model,
                run,
            )
            info["rag_api"] = switched
        dep.record_deployment(registry, run, info)
    except TunestackError as e:
        fail(e)
    console.print(
        f"[green]Deployed[/] {run} ({f.quant}) to {to} as '{model}'. "
        f"Check: {info['verify']['response']!r}"
    )
    if switched:
        console.print(f"The RAG API now answers with '{model}' ({info['base_url']}).")
    elif not no_switch:
        console.print("No RAG API is running here; it will use the model when started.")


def register(app: typer.Typer) -> None:
    """Add `export` and `deploy` to the `tunestack llm` group."""
    app.command("export")(export)
    app.command("deploy")(deploy)
