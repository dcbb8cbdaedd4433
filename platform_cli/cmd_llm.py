"""`tunestack llm train|eval|chat`: thin commands over services.trainer."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from platform_cli.output import console, err_console, fail, progress_bar
from services.common.errors import TunestackError
from services.common.logs import quiet_libraries
from services.common.registry import Registry

llm_app = typer.Typer(
    help="Fine-tune, evaluate and chat with LLMs (LLaMA-Factory datasets and YAML keys).",
    no_args_is_help=True,
)


def _settings() -> Any:
    from services.trainer.settings import TrainSettings

    quiet_libraries()
    return TrainSettings()


def _say(msg: str) -> None:
    err_console.print(msg, highlight=False)


def _datasets(value: str) -> list[str]:
    return [d.strip() for d in value.split(",") if d.strip()]


@llm_app.command()
def train(
    config: Annotated[Path, typer.Option("--config", "-c", help="LLaMA-Factory style YAML.")],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="key=value overrides, e.g. max_steps=20")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Supervised fine-tuning (LoRA, QLoRA, freeze, full); resumable after a crash."""
    from services.trainer.config import load_config, parse_overrides
    from services.trainer.train import run_training

    s = _settings()
    try:
        cfg, ignored = load_config(config, parse_overrides(overrides or []))
        res = run_training(
            cfg, s, config_path=config, ignored_keys=ignored, say=_say, progress=s.progress
        )
    except TunestackError as e:
        fail(e)
    except KeyboardInterrupt:
        fail(
            TunestackError(
                "Training interrupted.",
                hint=f"Rerun `tunestack llm train --config {config}` to resume from the "
                "last checkpoint (checkpoints are written every save_steps).",
            ),
            code=130,
        )
    m = res.metrics
    if as_json:
        console.print_json(
            json.dumps({"run": res.run_name, "output_dir": str(res.output_dir), **m}, default=str)
        )
        return
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


@llm_app.command("eval")
def eval_(
    run: Annotated[str, typer.Argument(help="A trained run, or a base model name.")],
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
    from services.trainer.evaluate import evaluate

    s = _settings()
    try:
        with progress_bar("Generating") as prog:
            task = prog.task_ids[0]
            res = evaluate(
                run,
                _datasets(dataset),
                Registry(s.home_dir),
                dataset_dir=dataset_dir,
                fallback_dataset_dir=s.dataset_dir,
                max_samples=max_samples,
                max_new_tokens=max_new_tokens or s.max_new_tokens,
                batch_size=batch_size or s.eval_batch_size,
                output_dir=output_dir,
                template=template,
                system=system,
                progress=lambda d, n: prog.update(task, completed=d, total=n),
                threads=s.threads,
            )
    except TunestackError as e:
        fail(e)
    m = res.metrics
    if as_json:
        console.print_json(json.dumps({"output_dir": str(res.output_dir), **m}, ensure_ascii=False))
        return
    t = Table("model", "samples", "BLEU-4", "ROUGE-1", "ROUGE-2", "ROUGE-L", "time")
    t.add_row(
        run,
        str(m["num_samples"]),
        *(f"{m[f'predict_{k}']:.2f}" for k in ("bleu-4", "rouge-1", "rouge-2", "rouge-l")),
        f"{m['predict_runtime']:.1f}s",
    )
    console.print(t)
    console.print(f"Predictions and scores: {res.output_dir}")


@llm_app.command()
def chat(
    run: Annotated[str, typer.Argument(help="A trained run, or a base model name.")],
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
    from services.trainer.chat import ChatSession
    from services.trainer.inference import load_llm

    s = _settings()
    try:
        with err_console.status(f"Loading {run}..."):
            llm = load_llm(
                run, Registry(s.home_dir), template=template, system=system, threads=s.threads
            )
    except TunestackError as e:
        fail(e)
    session = ChatSession(
        llm,
        system=system,
        max_new_tokens=max_new_tokens or s.max_new_tokens,
        temperature=temperature,
    )

    def say(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    def turn(text: str) -> None:
        say("assistant> ")
        r = session.reply(text, on_text=say)
        say("\n" if r.stop_reason == "stop" else " [max_new_tokens reached]\n")

    if message:
        for m in message:
            turn(m)
        return
    interactive = sys.stdin.isatty()
    if interactive:
        err_console.print(f"Chatting with [bold]{run}[/]. /reset clears the history, /exit quits.")
    while True:
        if interactive:
            say("you> ")
        line = sys.stdin.readline()
        if not line:
            break
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit", "exit", "quit"):
            break
        if text == "/reset":
            session.reset()
            err_console.print("History cleared.")
            continue
        turn(text)
