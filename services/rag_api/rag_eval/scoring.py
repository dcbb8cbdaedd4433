"""One answer scored (a QuestionResult), and a combination's rows summed up."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.rag_api import prompts
from services.rag_api.answering import Answer
from services.rag_api.rag_eval import metrics as m
from services.rag_api.rag_eval.gold import Gold
from services.rag_api.rag_eval.records import (
    Combo,
    EvalQuestion,
    QuestionResult,
    RetrievedChunk,
    Role,
)


def score_answer(
    q: EvalQuestion,
    role: Role,
    gold: Gold,
    combo: Combo,
    ans: Answer,
    min_relevance: float | None = None,
) -> QuestionResult:
    """`min_relevance`: the request's gate threshold (None: the build's, 0: off)."""
    hits = ans.hits
    threshold = ans.retrieval.min_relevance if min_relevance is None else min_relevance
    threshold = threshold or None
    lang = m.lang_of(q.answers, q.question)
    gold_ranks = {i for i, h in enumerate(hits, start=1) if h.id in gold.bearing}
    gold_rank = min(gold_ranks) if gold_ranks else None
    cited = prompts.cited_numbers(ans.text, len(hits))
    abstained = m.abstained(ans.text)
    answerable = not q.unanswerable and gold.in_collection is not False
    scores: dict[str, float | None] = {"abstained": float(abstained)}
    if answerable:
        if q.answers:
            scores.update(m.answer_scores(ans.text, q.answers, lang))
        if gold.bearing:
            scores["hit"] = float(gold_rank is not None)
            scores["rr"] = 1.0 / gold_rank if gold_rank else 0.0
        if not abstained:
            if gold.bearing:
                precision, recall = m.citation_scores(cited, gold_ranks)
                scores["citation_precision"] = precision
                scores["citation_recall"] = recall
            scores["no_citation"] = float(not cited)
            scores["faithfulness"] = m.faithfulness(
                ans.text, [hits[c - 1].text for c in cited], lang
            )
    return QuestionResult(
        qid=q.id,
        question=q.question,
        llm=combo.llm,
        embedder=combo.embedder,
        mode=combo.mode,
        lang=lang,
        role=role,
        answerable=answerable,
        gold_in_collection=gold.in_collection,
        answers=list(q.answers),
        answer=ans.text,
        abstained=abstained,
        cited=cited,
        retrieved=[
            RetrievedChunk(
                rank=i,
                id=h.id,
                file_name=h.file_name,
                chunk_index=h.chunk_index,
                score=round(float(h.score), 6),
                text=h.text,
                gold=h.id in gold.bearing,
            )
            for i, h in enumerate(hits, start=1)
        ],
        gold_rank=gold_rank,
        scores=scores,
        seconds=round(ans.seconds, 4),
        retrieval_ms=round(ans.retrieval.took_ms, 2),
        prompt_tokens=int(ans.usage.get("prompt_tokens", 0)),
        completion_tokens=int(ans.usage.get("completion_tokens", 0)),
        gated=ans.gated,
        min_relevance=threshold,
    )


def _avg(rows: Sequence[QuestionResult], key: str) -> float | None:
    return m.mean(r.scores.get(key) for r in rows)


def summarize(rows: Sequence[QuestionResult], top_k: int) -> dict[str, Any]:
    """A combination's figures (None where nothing could be measured)."""
    ans = [r for r in rows if r.answerable]
    una = [r for r in rows if not r.answerable]
    speaking = [r for r in ans if not r.abstained]
    gen_seconds = sum(max(1e-6, r.seconds - r.retrieval_ms / 1000) for r in rows)
    tokens = sum(r.completion_tokens for r in rows)
    latencies = [r.seconds for r in rows]
    p50, p95 = m.percentile(latencies, 50), m.percentile(latencies, 95)
    return {
        "questions": len(rows),
        "answerable": len(ans),
        "unanswerable": len(una),
        f"hit@{top_k}": _avg(ans, "hit"),
        "hit@1": m.mean(float(r.gold_rank == 1) for r in ans if "hit" in r.scores),
        f"mrr@{top_k}": _avg(ans, "rr"),
        "em": _avg(ans, "em"),
        "f1": _avg(ans, "f1"),
        "rouge_l": _avg(ans, "rouge_l"),
        "citation_precision": _avg(speaking, "citation_precision"),
        "citation_recall": _avg(speaking, "citation_recall"),
        "no_citation": _avg(speaking, "no_citation"),
        "faithfulness": _avg(speaking, "faithfulness"),
        "false_abstention": m.mean(float(r.abstained) for r in ans),
        # the relevance gate: its threshold, and the share of answers it gave
        "min_relevance": next((r.min_relevance for r in rows if r.min_relevance), None),
        "gated": m.mean(float(r.gated) for r in rows)
        if any(r.min_relevance for r in rows)
        else None,
        "abstention": m.mean(float(r.abstained) for r in una),
        "invented": m.mean(float(not r.abstained) for r in una),
        "latency_p50_s": round(p50, 3) if p50 is not None else None,
        "latency_p95_s": round(p95, 3) if p95 is not None else None,
        "tokens_per_s": round(tokens / gen_seconds, 2) if rows and tokens else None,
        "completion_tokens": tokens,
        "judge_correctness": _avg(rows, "judge_correctness"),
        "judge_groundedness": _avg(rows, "judge_groundedness"),
        # judged answers whose grades could not be read from the judge's reply
        "judge_unreadable": sum(
            "judge_correctness" in r.scores
            and r.scores["judge_correctness"] is None
            and r.scores.get("judge_groundedness") is None
            for r in rows
        ),
    }
