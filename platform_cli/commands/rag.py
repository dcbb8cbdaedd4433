"""`tunestack rag eval` and `rag calibrate`: thin commands over services.rag_api.rag_eval
(the API's own answer path) and services.rag_api.relevance, run in this process on the
stack's vector store and LLM server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from platform_cli.context import provision_bases, rag_context, run, settings
from platform_cli.output import console, err_console, progress_bar
from services.rag_api import relevance
from services.rag_api.rag_eval import report as report_mod
from services.rag_api.rag_eval.records import RagEvalReport, RagEvalRequest

app = typer.Typer(
    help="Evaluate the RAG answers: LLM x embedder x retrieval mode on a QA set.",
    no_args_is_help=True,
)


@app.command("eval")
def eval_cmd(
    dataset: Annotated[
        Path,
        typer.Option(help="SQuAD/CMRC 2018 JSON, EmbeddingQA JSON (+answers) or JSONL."),
    ],
    collection: Annotated[str, typer.Option("--collection", "-c")],
    llm: Annotated[
        list[str] | None,
        typer.Option(help="A model on the configured LLM server(s); repeat to compare."),
    ] = None,
    embedder: Annotated[
        list[str] | None,
        typer.Option(help="An embedder the collection is built for; repeat to compare."),
    ] = None,
    mode: Annotated[
        list[str] | None, typer.Option(help="dense | bm25 | hybrid; repeat to compare.")
    ] = None,
    top_k: Annotated[int | None, typer.Option(help="Chunks per answer.")] = None,
    max_tokens: Annotated[
        int | None, typer.Option(help="Longest answer (default: the API's, 256).")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="The first N questions.")] = None,
    unanswerable: Annotated[
        int, typer.Option(help="Add N questions whose passage the collection lacks.")
    ] = 0,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the same run after an interruption.")
    ] = False,
    judge: Annotated[
        str | None,
        typer.Option(help="A model on a configured LLM server that grades each answer."),
    ] = None,
    min_relevance: Annotated[
        float | None,
        typer.Option(
            help="The relevance gate's threshold for every build (0: off; default: each "
            "build's, from `rag calibrate`)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Answer a QA set through the RAG API's answer path; answer, citation, abstention and
    speed metrics per combination, and a report."""
    s = settings()
    ctx = rag_context(s)
    provision_bases(ctx.registry, "embedder", [*(embedder or []), s.default_embedder])
    req = RagEvalRequest(
        dataset=dataset,
        collection=collection,
        llms=llm or [],
        embedders=embedder or [],
        modes=mode or ["dense"],
        top_k=top_k,
        max_tokens=max_tokens,
        limit=limit,
        unanswerable=unanswerable,
        resume=resume,
        judge=judge,
        min_relevance=min_relevance,
    )
    with progress_bar("Answering") as prog:
        task = prog.task_ids[0]

        def show(done: int, total: int, msg: str) -> None:
            prog.update(task, completed=done, total=total or None, item=msg)

        # the answer chain (LangChain, ~1 s to import) loads only when an eval runs
        from services.rag_api.rag_eval.runner import RagBackend, run_rag_eval

        report = run(lambda: asyncio.run(run_rag_eval(RagBackend(ctx), req, show)))
    if as_json:
        out = {
            "report": str(report.folder),
            "counts": report.counts,
            "notes": report.notes,
            "grid": [{**c.to_dict(), **report.summary[c.key]} for c in report.combos],
        }
        console.print_json(json.dumps(out, ensure_ascii=False))
        return
    print_report(report, judged=judge is not None)


@app.command("calibrate")
def calibrate_cmd(
    collection: Annotated[str, typer.Option("--collection", "-c")],
    dataset: Annotated[
        Path | None,
        typer.Option(
            help="Questions these documents answer (any format rag eval reads; answers are "
            "not needed). Never the questions you will report on."
        ),
    ] = None,
    embedder: Annotated[
        str | None, typer.Option(help="The build to calibrate (default: the collection's).")
    ] = None,
    false_abstention: Annotated[
        float, typer.Option(help="Share of such questions the gate may turn away.")
    ] = 0.05,
    off: Annotated[bool, typer.Option("--off", help="Turn the build's gate off.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Set the relevance gate of a collection's build: a question whose best passage is
    less similar than the threshold is answered "not in the documents" without the LLM.
    The threshold turns away FALSE_ABSTENTION of the dataset's answerable questions."""
    if off == (dataset is not None):
        err_console.print("Give --dataset QA to calibrate, or --off to turn the gate off.")
        raise typer.Exit(2)
    s = settings()
    ctx = rag_context(s)
    provision_bases(
        ctx.registry, "embedder", [*([embedder] if embedder else []), s.default_embedder]
    )
    if dataset is None:
        result = run(lambda: relevance.clear(ctx, collection, embedder))
    else:
        with progress_bar("Retrieving") as prog:
            task = prog.task_ids[0]

            def show(done: int, total: int) -> None:
                prog.update(task, completed=done, total=total, item=f"{done}/{total}")

            result = run(
                lambda: relevance.calibrate(
                    ctx,
                    collection,
                    dataset,
                    embedder=embedder,
                    false_abstention=false_abstention,
                    progress=show,
                )
            )
    if as_json:
        console.print_json(json.dumps(result.to_dict(), ensure_ascii=False))
        return
    where = f"'{result.collection}' ({result.embedder})"
    if result.min_relevance is None:
        console.print(f"Relevance gate off for {where}.", highlight=False)
        return
    sim = result.best_similarity or {}
    console.print(
        f"Relevance gate of {where}: min_relevance {result.min_relevance:.4f}, from "
        f"{result.questions} answerable questions ({result.skipped} skipped); it turns away "
        f"{result.false_abstention:.1%} of them. Their best passage's similarity: p5 "
        f"{sim.get('p5', 0):.3f}, median {sim.get('p50', 0):.3f}, p95 {sim.get('p95', 0):.3f}.",
        highlight=False,
    )
    console.print(
        "Answers use it from the next question on (`tunestack rag calibrate -c "
        f"{result.collection} --off` turns it off).",
        highlight=False,
    )


def print_report(report: RagEvalReport, judged: bool = False) -> None:
    k = report.top_k
    counts = ", ".join(f"{v} {n.replace('_', ' ')}" for n, v in report.counts.items())
    console.print(f"[bold]{report.dataset}[/] on [bold]{report.collection}[/]: {counts}")
    for i, c in enumerate(report.combos, start=1):
        n = report.summary[c.key]["questions"]
        console.print(f"  #{i}  {c.llm} · {c.embedder} · {c.mode}  ({n} answers)", highlight=False)
    quality = [(f"hit@{k}", f"hit@{k}"), (f"mrr@{k}", f"MRR@{k}"), *report_mod.QUALITY_COLUMNS]
    behaviour = [*report_mod.BEHAVIOUR_COLUMNS, *(report_mod.JUDGE_COLUMNS if judged else ())]
    for cols in (quality, behaviour):
        t = Table("#", *(title for _, title in cols), box=box.SIMPLE_HEAD, pad_edge=False)
        for i, c in enumerate(report.combos, start=1):
            row = report.summary[c.key]
            t.add_row(f"#{i}", *(report_mod.fmt(row.get(key)) for key, _ in cols))
        console.print(t)
    for note in report.notes:
        err_console.print(f"[yellow]note:[/] {note}", highlight=False)
    if report.resumed:
        console.print(f"{report.resumed} answers were taken over from the interrupted run.")
    console.print(
        f"report: {report.folder}/report.md, {report_mod.HEATMAP}, {report_mod.QUESTIONS}",
        highlight=False,
    )
