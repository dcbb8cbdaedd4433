"""Run a RAG evaluation: every (LLM, embedder, mode) over the selected questions, each
answered by services.rag_api.answering.answer (the API's own answer path: retrieval,
prompt, LLM settings, citations), scored, and appended to questions.jsonl as it comes.

The answers of a run go to reports/.rag-eval-<id>/questions.jsonl, one line per answer,
flushed at once; <id> hashes the dataset's bytes and every parameter. If the LLM (or
Chroma) goes down, the run stops with a 503-type error naming it and what is kept; the
same run with `resume` asks only what is missing. A run that ends writes the report
folder and removes its partial one. Without `resume`, a partial run is started over.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Protocol

from services.common import atomic
from services.common.errors import BadInput, Conflict, ServiceUnavailable, TunestackError
from services.common.locks import file_lock, lock_path
from services.rag_api import answering
from services.rag_api import llm as llm_mod
from services.rag_api.answering import Answer, AnswerRequest
from services.rag_api.context import RagContext
from services.rag_api.llm import LlmHolder, LlmTarget
from services.rag_api.rag_eval import judge as judge_mod
from services.rag_api.rag_eval import report as report_mod
from services.rag_api.rag_eval.datasets import load_dataset, missing_metrics_note
from services.rag_api.rag_eval.gold import Chunk, ChunkIndex, Gold, build_chunks
from services.rag_api.rag_eval.llms import resolve_llms
from services.rag_api.rag_eval.records import (
    Combo,
    EvalQuestion,
    QuestionResult,
    RagEvalReport,
    RagEvalRequest,
    Role,
)
from services.rag_api.rag_eval.scoring import score_answer, summarize
from services.rag_api.retrieval import MODES

# (done, total, message)
Progress = Callable[[int, int, str], None]
MAX_COMBOS = 64


def _quiet(done: int, total: int, message: str) -> None:
    pass


class Backend(Protocol):
    """What a run needs from the stack (RagBackend: the API's or a CLI's RagContext)."""

    home: Path
    reports: Path
    default_top_k: int

    async def targets(self, names: list[str]) -> dict[str, LlmTarget]: ...

    def embedders(self, collection: str, names: list[str]) -> list[str]: ...

    def chunks(self, collection: str, embedder: str) -> list[Chunk]: ...

    async def answer(self, target: LlmTarget, req: AnswerRequest) -> Answer: ...

    async def complete(self, target: LlmTarget, system: str, user: str) -> str: ...


class RagBackend:
    def __init__(self, ctx: RagContext) -> None:
        self.ctx = ctx
        self.home = ctx.settings.home_dir
        self.reports = ctx.registry.reports
        self.default_top_k = ctx.settings.top_k

    async def targets(self, names: list[str]) -> dict[str, LlmTarget]:
        return await resolve_llms(self.ctx.settings, self.ctx.llm.target, names)

    def embedders(self, collection: str, names: list[str]) -> list[str]:
        """The names (each must have a build of the collection; EmbedderMismatch names the
        reindex command), or the embedder of the build queries use by default."""
        if not names:
            build, _ = self.ctx.retriever.resolve(collection, None)
            return [build.embedder]
        for name in names:
            self.ctx.retriever.resolve(collection, name)
        return names

    def chunks(self, collection: str, embedder: str) -> list[Chunk]:
        store = self.ctx.store
        build = store.resolve(collection, embedder, None, self.ctx.settings.default_embedder)
        return build_chunks(store, build)

    async def answer(self, target: LlmTarget, req: AnswerRequest) -> Answer:
        # the API's context with this LLM: the served model is not switched for anyone else
        ctx = dataclasses.replace(self.ctx, llm=LlmHolder(target))
        return await answering.answer(ctx, req)

    async def complete(self, target: LlmTarget, system: str, user: str) -> str:
        """One plain chat completion (the judge), greedy and short."""
        chat = target.chat_model(temperature=0.0, max_tokens=48, streaming=False)
        try:
            msg = await chat.ainvoke([("system", system), ("human", user)])
        except Exception as e:
            raise llm_mod.translate(target, e) from e
        return str(msg.content)


# ---- the partial run ---------------------------------------------------------------------------


class PartialRun:
    """questions.jsonl of a run in progress, appended one answer at a time."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.file = folder / report_mod.QUESTIONS

    def reset(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def load(self) -> dict[tuple[str, str, str, str], QuestionResult]:
        """Answers kept so far (a line cut off by a kill is dropped, and the file rewritten
        without it so the next append starts on a line of its own)."""
        if not self.file.is_file():
            return {}
        rows: dict[tuple[str, str, str, str], QuestionResult] = {}
        good: list[str] = []
        lines = self.file.read_text(encoding="utf-8").splitlines()
        for line in lines:
            try:
                r = QuestionResult.from_dict(json.loads(line))
            except (ValueError, TypeError):
                continue
            rows[r.key] = r
            good.append(line)
        if len(good) != len(lines) or not self.file.read_text(encoding="utf-8").endswith("\n"):
            atomic.write_text(self.file, "".join(g + "\n" for g in good))
        return rows

    def start(self, params: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic.write_json(self.folder / "request.json", params)

    def append(self, r: QuestionResult) -> None:
        with self.file.open("a", encoding="utf-8") as f:
            f.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
            f.flush()

    def remove(self) -> None:
        atomic.remove_dir(self.folder)


@contextmanager
def _run_lock(home: Path, key: str) -> Iterator[None]:
    with file_lock(lock_path(home, "rag-eval", key), timeout=0.5, what="The same RAG evaluation"):
        yield


# ---- the run ------------------------------------------------------------------------------------


def _check(req: RagEvalRequest, top_k: int) -> None:
    bad = [m for m in req.modes if m not in MODES]
    if bad or not req.modes:
        raise BadInput(
            f"Unknown retrieval mode: {', '.join(bad) or '(none)'}.",
            hint="Use dense, bm25 or hybrid.",
        )
    if not 1 <= top_k <= 100:
        raise BadInput("top_k must be between 1 and 100.")
    if req.max_tokens is not None and not 1 <= req.max_tokens <= 8192:
        raise BadInput("--max-tokens must be between 1 and 8192.")
    if req.limit is not None and req.limit < 1:
        raise BadInput("--limit must be at least 1.")
    if req.unanswerable < 0:
        raise BadInput("--unanswerable must be 0 or more.")
    if req.min_relevance is not None and not 0.0 <= req.min_relevance <= 1.0:
        raise BadInput("--min-relevance must be between 0 and 1 (0 turns the gate off).")


def run_key(
    req: RagEvalRequest, data_hash: str, llms: list[str], embedders: list[str], top_k: int
) -> str:
    params = {
        "dataset": data_hash,
        "collection": req.collection,
        "llms": llms,
        "embedders": embedders,
        "modes": req.modes,
        "top_k": top_k,
        "max_tokens": req.max_tokens,
        "limit": req.limit,
        "unanswerable": req.unanswerable,
        "judge": req.judge,
        "min_relevance": req.min_relevance,
    }
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def _plan(
    questions: list[EvalQuestion], index: ChunkIndex, req: RagEvalRequest
) -> tuple[list[tuple[EvalQuestion, Role, Gold]], dict[str, int], list[str]]:
    selected = questions[: req.limit] if req.limit else list(questions)
    plan: list[tuple[EvalQuestion, Role, Gold]] = [(q, "selected", index.gold(q)) for q in selected]
    notes: list[str] = []
    added = 0
    if req.unanswerable:
        for q in questions[len(selected) :]:
            if added >= req.unanswerable:
                break
            g = index.gold(q)
            if g.in_collection is False:
                plan.append((q, "added-unanswerable", g))
                added += 1
        if added < req.unanswerable:
            notes.append(
                f"--unanswerable {req.unanswerable}: only {added} more questions of the dataset "
                "have a gold passage the collection lacks (the dataset must name passages, and "
                "the collection must leave some out)."
            )
    sel_gold = [g for _, role, g in plan if role == "selected"]
    counts = {
        "selected": len(selected),
        "gold_missing": sum(g.in_collection is False for g in sel_gold),
        "marked_unanswerable": sum(q.unanswerable for q, role, _ in plan if role == "selected"),
        "added_unanswerable": added,
    }
    if counts["gold_missing"]:
        notes.append(
            f"{counts['gold_missing']} of {len(selected)} selected questions have a gold "
            "passage that is not in the collection: they are scored for abstention, not for "
            "retrieval or answer accuracy."
        )
    return plan, counts, notes


async def run_rag_eval(
    backend: Backend, req: RagEvalRequest, progress: Progress = _quiet
) -> RagEvalReport:
    top_k = backend.default_top_k if req.top_k is None else req.top_k
    _check(req, top_k)
    progress(0, 0, f"reading {req.shown_name}")
    ds = await asyncio.to_thread(load_dataset, req.dataset, req.shown_name)
    data_hash = hashlib.sha256(await asyncio.to_thread(req.dataset.read_bytes)).hexdigest()
    progress(0, 0, "checking the LLMs and the collection's builds")
    targets = await backend.targets(req.llms)
    judge = (await backend.targets([req.judge]))[req.judge] if req.judge else None
    embedders = await asyncio.to_thread(backend.embedders, req.collection, req.embedders)
    combos = [Combo(llm, e, mode) for llm in targets for e in embedders for mode in req.modes]
    if len(combos) > MAX_COMBOS:
        raise BadInput(f"{len(combos)} combinations; at most {MAX_COMBOS} per run.")
    progress(0, 0, f"matching the dataset's passages to '{req.collection}'")
    index = ChunkIndex(await asyncio.to_thread(backend.chunks, req.collection, embedders[0]))
    plan, counts, notes = _plan(ds.questions, index, req)
    notes = [*missing_metrics_note(ds), *notes]
    key = run_key(req, data_hash, list(targets), embedders, top_k)
    partial = PartialRun(backend.reports / f".{report_mod.KIND}-{key}")
    held = ExitStack()
    try:
        # waits up to half a second: off the event loop, which may be the API's
        await asyncio.to_thread(held.enter_context, _run_lock(backend.home, key))
    except Conflict:
        raise Conflict(
            "The same evaluation is running already (same dataset, collection and options).",
            hint="Wait for it to finish; GET /v1/jobs lists the API's jobs.",
        ) from None
    with held:
        if not req.resume:
            dropped = len(partial.load())
            partial.reset()
            if dropped:
                notes.append(
                    f"Started over: an interrupted run of this evaluation had {dropped} "
                    "answers (--resume would have kept them)."
                )
        done = partial.load()
        resumed = len(done)
        partial.start(
            {
                "dataset": req.shown_name,
                "collection": req.collection,
                "llms": list(targets),
                "embedders": embedders,
                "modes": req.modes,
                "top_k": top_k,
                "limit": req.limit,
                "unanswerable": req.unanswerable,
                "judge": req.judge,
                "min_relevance": req.min_relevance,
            }
        )
        total = len(plan) * len(combos)
        count = sum((q.id, c.llm, c.embedder, c.mode) in done for c in combos for q, _, _ in plan)
        progress(count, total, f"{count}/{total} answers" + (" (resumed)" if count else ""))
        for combo in combos:
            target = targets[combo.llm]
            for q, role, gold in plan:
                if (q.id, combo.llm, combo.embedder, combo.mode) in done:
                    continue
                ans_req = AnswerRequest(
                    collection=req.collection,
                    question=q.question,
                    top_k=top_k,
                    mode=combo.mode,
                    embedder=combo.embedder,
                    llm=target.model,
                    max_tokens=req.max_tokens,
                    min_relevance=req.min_relevance,
                )
                try:
                    ans = await backend.answer(target, ans_req)
                except TunestackError as e:
                    raise _stopped(e, f"LLM '{combo.llm}'", combo, count, total) from e
                result = score_answer(q, role, gold, combo, ans, req.min_relevance)
                if judge is not None:
                    cited = [ans.hits[c - 1].text for c in result.cited]
                    user = judge_mod.user_message(q.question, list(q.answers), ans.text, cited)
                    try:
                        reply = await backend.complete(judge, judge_mod.SYSTEM, user)
                    except TunestackError as e:
                        raise _stopped(e, f"Judge '{req.judge}'", combo, count, total) from e
                    result.scores.update(judge_mod.parse_grades(reply))
                partial.append(result)
                done[result.key] = result
                count += 1
                progress(count, total, f"{combo.key}: {count}/{total}")
        rows = [done[(q.id, c.llm, c.embedder, c.mode)] for c in combos for q, _, _ in plan]
        summary = {c.key: summarize([r for r in rows if r.combo == c], top_k) for c in combos}
        body = {
            "kind": report_mod.KIND,
            "dataset": req.shown_name,
            "format": ds.format,
            "collection": req.collection,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "top_k": top_k,
            "max_tokens": req.max_tokens,
            "llms": list(targets),
            "llm_servers": {n: t.base_url for n, t in targets.items()},
            "embedders": embedders,
            "modes": req.modes,
            "limit": req.limit,
            "unanswerable": req.unanswerable,
            "counts": counts,
            "notes": notes,
            "grid": report_mod.grid_rows(combos, summary),
            "judge": req.judge,
            "resumed_answers": resumed,
            "made_by": req.made_by,
        }
        progress(total, total, "writing the report")
        folder = await asyncio.to_thread(report_mod.write_report, backend.reports, body, rows)
        partial.remove()
    return RagEvalReport(
        folder=folder,
        dataset=req.shown_name,
        collection=req.collection,
        top_k=top_k,
        combos=combos,
        summary=summary,
        counts=counts,
        notes=notes,
        resumed=resumed,
    )


def _stopped(e: TunestackError, who: str, combo: Combo, kept: int, total: int) -> TunestackError:
    """The run's failure, naming the peer that went down, with what is kept and how to go
    on (a 503 stays a 503 naming the service)."""
    again = (
        f"The {kept} answers are kept: fix this, then rerun the same evaluation with "
        '--resume (API: "resume": true); only the missing answers are asked.'
    )
    if isinstance(e, ServiceUnavailable):
        who = who if e.service == "llm" else e.service.capitalize()
        err: TunestackError = ServiceUnavailable(
            e.service,
            f"{who} stopped answering after {kept} of {total} answers: {e.message}",
            hint=f"{e.hint} {again}" if e.hint else again,
        )
    else:
        err = TunestackError(
            f"{combo.key}: the answer failed after {kept} of {total} answers: {e.message}",
            hint=f"{e.hint} {again}" if e.hint else again,
        )
    err.status_code = e.status_code
    return err
