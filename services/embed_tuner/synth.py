"""Training queries for an embedder, synthesized from the user's own passages.

Two ways, both writing LlamaIndex's EmbeddingQAFinetuneDataset JSON:

- with an LLM (any OpenAI-compatible endpoint): LlamaIndex's quiz-style prompt, N
  questions per chunk, parsed robustly, cached per chunk in `<out>.partial.jsonl` so an
  interrupted run resumes where it stopped;
- without one (the offline default): pseudo-queries made from the passage's own
  sentences, see `pseudo_queries` for the method and why.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from services.common.errors import BadInput, ServiceUnavailable
from services.common.qa import QADataset, split_queries
from services.embed_tuner.pseudo_queries import pseudo_queries

Progress = Callable[[int, int], None]

# LlamaIndex's DEFAULT_QA_GENERATE_PROMPT_TMPL (llama_index.finetuning), the prompt its
# embedding fine-tuning tutorial uses; kept verbatim so results compare with that path.
QUIZ_PROMPT = """\
Context information is below.

---------------------
{context_str}
---------------------

Given the context information and not prior knowledge.
generate only questions based on the below query.

You are a Teacher/ Professor. Your task is to setup \
{num_questions_per_chunk} questions for an upcoming \
quiz/examination. The questions should be diverse in nature \
across the document. Restrict the questions to the \
context information provided."""

_NUMBERING = re.compile(
    r"^\s*(?:(?:q(?:uestion)?\s*)?\d+\s*[.):：、-]|q(?:uestion)?\s*[:：]|[-*•·]|\(\d+\))\s*",
    re.IGNORECASE,
)
_NORM = re.compile(r"[\W_]+", re.UNICODE)
_SPLIT_QUESTIONS = re.compile(r"(?<=[?？])\s+")  # small models put several on one line


def _norm(text: str) -> str:
    return _NORM.sub(" ", text.lower()).strip()


def parse_questions(raw: str, passage: str, limit: int) -> list[str]:
    """Questions from an LLM reply: numbering, bullets, blank lines and duplicates removed;
    lines that are not questions, and questions copied verbatim from the passage, dropped."""
    out: list[str] = []
    seen: set[str] = set()
    norm_passage = _norm(passage)
    pieces = [p for line in raw.splitlines() for p in _SPLIT_QUESTIONS.split(line)]
    for piece in pieces:
        q = _NUMBERING.sub("", piece.strip()).strip().strip("\"'“”*").strip()
        if not q or not (q.endswith(("?", "？")) or (len(q.split()) >= 4 and q[-1:].isalnum())):
            continue
        if len(q) < 8 or q.lower().startswith(("here are", "sure", "questions")):
            continue
        n = _norm(q)
        if not n or n in seen or (len(n) > 20 and n in norm_passage):
            continue
        seen.add(n)
        out.append(q)
        if len(out) >= limit:
            break
    return out


@dataclass
class LlmConfig:
    base_url: str
    model: str
    api_key: str = "sk-no-key-required"
    temperature: float = 0.7
    max_tokens: int = 256
    timeout_s: float = 120.0
    # Sent as the request's `seed` (llama.cpp, vLLM and OpenAI honour it) so a rerun of
    # the same corpus asks the same questions; None leaves sampling to the server.
    seed: int | None = None
    # A small teacher sometimes answers a passage with no line that parses as a question;
    # one more draw with the next seed usually does, and costs a call only when it failed.
    attempts: int = 2


def llm_questions(
    corpus: dict[str, str],
    cfg: LlmConfig,
    per_chunk: int,
    cache: Path,
    progress: Progress | None = None,
) -> dict[str, list[str]]:
    """chunk id -> questions, resuming from `cache` (JSONL, one line per finished chunk)."""
    key = hashlib.sha256(json.dumps([cfg.model, per_chunk, QUIZ_PROMPT]).encode()).hexdigest()
    done: dict[str, list[str]] = {}
    if cache.exists():
        for line in cache.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut off by a kill: that chunk is simply redone
            if row.get("key") == key and row.get("id") in corpus:
                done[row["id"]] = list(row.get("questions", []))
    cache.parent.mkdir(parents=True, exist_ok=True)
    url = cfg.base_url.rstrip("/") + "/chat/completions"
    headers = {"Authorization": f"Bearer {cfg.api_key}"}
    todo = [cid for cid in corpus if cid not in done]
    with httpx.Client(timeout=cfg.timeout_s) as client, cache.open("a", encoding="utf-8") as f:
        for i, cid in enumerate(todo):
            prompt = QUIZ_PROMPT.format(context_str=corpus[cid], num_questions_per_chunk=per_chunk)
            body: dict[str, Any] = {
                "model": cfg.model,
                "messages": [{"role": "user", "content": prompt}],
                "temperature": cfg.temperature,
                "max_tokens": cfg.max_tokens,
            }
            qs: list[str] = []
            for attempt in range(max(1, cfg.attempts)):
                if cfg.seed is not None:
                    body["seed"] = cfg.seed + attempt
                try:
                    r = client.post(url, json=body, headers=headers)
                    r.raise_for_status()
                    text = r.json()["choices"][0]["message"]["content"] or ""
                except httpx.HTTPError as e:
                    raise ServiceUnavailable(
                        "llm",
                        f"Question generation failed at {cfg.base_url}: {e}",
                        hint="Check the server (tunestack status); rerun to resume where it "
                        "stopped.",
                    ) from e
                qs = parse_questions(text, corpus[cid], per_chunk)
                if qs:
                    break
            done[cid] = qs
            f.write(json.dumps({"key": key, "id": cid, "questions": qs}, ensure_ascii=False) + "\n")
            f.flush()
            if progress:
                progress(len(corpus) - len(todo) + i + 1, len(corpus))
    return done


def to_dataset(corpus: dict[str, str], questions: dict[str, list[str]]) -> QADataset:
    queries: dict[str, str] = {}
    rel: dict[str, list[str]] = {}
    for cid, qs in questions.items():
        for j, q in enumerate(qs):
            qid = f"{cid}-q{j}"
            queries[qid] = q
            rel[qid] = [cid]
    if not queries:
        raise BadInput(
            "No training queries could be made from this corpus.",
            hint="Give longer passages (several sentences each).",
        )
    return QADataset(queries, corpus, rel)


def synthesize(
    corpus: dict[str, str],
    *,
    per_chunk: int,
    val_fraction: float,
    llm: LlmConfig | None = None,
    cache: Path | None = None,
    seed: int = 0,
    method: str = "sentences",
    progress: Progress | None = None,
) -> tuple[QADataset, QADataset]:
    if llm is not None:
        if cache is None:
            raise ValueError("an LLM run needs a cache path")
        questions = llm_questions(corpus, llm, per_chunk, cache, progress)
        if corpus and not any(questions.values()):
            raise BadInput(
                f"The LLM '{llm.model}' gave no usable question for any of the "
                f"{len(corpus)} passages (each reply had no line that reads as a question).",
                hint="Use a larger teacher model (--llm-model), or leave out --llm for the "
                f"offline pseudo-queries. Delete {cache.name} beside --out to ask again.",
            )
    else:
        questions = pseudo_queries(corpus, per_chunk, seed=seed, method=method)
    ds = to_dataset(corpus, questions)
    train, val = split_queries(ds, val_fraction, seed)
    return train, val


def shuffle_pairs(ds: QADataset, seed: int) -> list[tuple[str, str]]:
    pairs = ds.pairs()
    random.Random(seed).shuffle(pairs)
    return pairs
