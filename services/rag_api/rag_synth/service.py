"""`synthesize`: documents (+ a QA set or a teacher LLM) -> a LLaMA-Factory SFT dataset.

The CLI (`tunestack llm synth`) adapts this one function. Output, in `out_dir`:
`<name>.json` (sharegpt with system/human/gpt turns, or alpaca), its entry merged into
dataset_info.json (other entries kept), and with a teacher `<name>.teacher.jsonl`, the
progress file a rerun resumes from. The written dataset is loaded back with the trainer's
own reader before the call returns, so what `llm train` will read is known to load.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from services.common import atomic
from services.common.embedders import EmbedderPool
from services.common.errors import BadInput
from services.rag_api.ingest import load_limits
from services.rag_api.rag_eval.datasets import load_dataset
from services.rag_api.rag_eval.gold import Chunk, ChunkIndex
from services.rag_api.rag_synth import examples as ex
from services.rag_api.rag_synth import passages as ps
from services.rag_api.rag_synth.teacher import Teacher, TeacherConfig, TeacherStats, teacher_pairs
from services.rag_api.settings import RagSettings
from services.trainer import datasets as ds

Format = Literal["sharegpt", "alpaca"]
Progress = Callable[[int, int], None]
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class SynthRequest:
    """Passages from exactly one of docs/corpus; questions from exactly one of qa/teacher."""

    out_dir: Path
    docs: Path | None = None
    corpus: Path | None = None
    qa: Path | None = None
    teacher: TeacherConfig | None = None
    name: str = "rag_sft"
    format: Format = "sharegpt"
    top_k: int | None = None  # None: TUNESTACK_RAG_TOP_K, what the RAG API retrieves
    distractor_only: float = 0.2
    seed: int = 0
    max_chunks: int | None = None  # teacher: ask about the first N chunks only
    embedder: str | None = None  # its tokenizer sizes --docs chunks (default: ingest's)

    def check(self) -> None:
        if (self.docs is None) == (self.corpus is None):
            raise BadInput("Give exactly one of --docs DIR or --corpus FILE.")
        if (self.qa is None) == (self.teacher is None):
            raise BadInput(
                "Give exactly one of --qa FILE (offline) or --teacher-url URL.",
                hint="--qa takes SQuAD, CMRC 2018, EmbeddingQA JSON or question/answer/source "
                "JSONL; --teacher-url any OpenAI-compatible /v1 server (with --teacher-model).",
            )
        if not _NAME.fullmatch(self.name):
            raise BadInput(
                f"'{self.name}' is not a usable dataset name.", hint="Use [A-Za-z0-9_.-]."
            )
        if self.format not in ("sharegpt", "alpaca"):
            raise BadInput(f"--format {self.format}: use sharegpt or alpaca.")
        if not 0.0 <= self.distractor_only <= 1.0:
            raise BadInput("--distractor-only must be between 0 and 1.")
        if self.top_k is not None and not 1 <= self.top_k <= 20:
            raise BadInput("--top-k must be between 1 and 20.")
        if self.teacher is not None and not 1 <= self.teacher.per_chunk <= 10:
            raise BadInput("--per-chunk must be between 1 and 10.")
        if self.max_chunks is not None and self.max_chunks < 1:
            raise BadInput("--max-chunks must be at least 1.")


@dataclass
class SynthResult:
    name: str
    format: str
    data_file: Path
    dataset_info: Path
    passages: int
    questions: int
    examples: int
    abstentions: int  # distractors only -> the abstention answer
    top_k: int
    skipped: dict[str, int] = field(default_factory=dict)  # questions left out, by reason
    teacher: TeacherStats | None = None
    progress_file: Path | None = None
    problems: list[str] = field(default_factory=list)  # files that could not be read
    replaced: bool = False  # the dataset_info entry existed and was replaced

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "name": self.name,
            "format": self.format,
            "data_file": str(self.data_file),
            "dataset_info": str(self.dataset_info),
            "passages": self.passages,
            "questions": self.questions,
            "examples": self.examples,
            "abstentions": self.abstentions,
            "top_k": self.top_k,
            "skipped": self.skipped,
            "unreadable_files": self.problems,
            "replaced": self.replaced,
        }
        if self.teacher is not None:
            t = self.teacher
            out["teacher"] = {
                "chunks": t.chunks,
                "resumed": t.resumed,
                "junk": t.junk,
                "pairs": t.pairs,
                "rejected": t.rejected,
                "progress_file": str(self.progress_file),
            }
        return out


def load_passages(
    s: RagSettings, req: SynthRequest, pool: EmbedderPool
) -> tuple[list[ps.SynthPassage], list[str]]:
    if req.corpus is not None:
        return ps.from_corpus_file(req.corpus), []
    assert req.docs is not None
    if not req.docs.exists():
        raise BadInput(f"{req.docs}: no such folder or file.")
    emb = pool.get(req.embedder or s.default_embedder)
    return ps.from_docs(
        req.docs,
        chunk_size=s.chunk_size,
        chunk_overlap=s.chunk_overlap,
        token_count=emb.tokens,
        max_file_bytes=s.max_file_mb * 2**20,
        limits=load_limits(s),
    )


def qa_questions(
    path: Path, passages: list[ps.SynthPassage], skipped: dict[str, int]
) -> list[ex.Question]:
    """A QA set's questions with their gold chunks, matched as `rag eval` matches them
    (passage text, or the JSONL `source` file, narrowed to chunks holding the answer)."""
    data = load_dataset(path)
    index = ChunkIndex(Chunk(p.id, p.text, p.file_name, p.source) for p in passages)
    order = {p.id: i for i, p in enumerate(passages)}  # document order
    out: list[ex.Question] = []
    for q in data.questions:
        if q.unanswerable:
            out.append(ex.Question(q.question, None, ()))
            continue
        if not q.answers:
            skipped["no reference answer"] = skipped.get("no reference answer", 0) + 1
            continue
        gold = index.gold(q)
        if gold.in_collection is False:  # its passage is not in these documents
            out.append(ex.Question(q.question, None, ()))
            continue
        if not gold.bearing:
            skipped["answer found in no chunk"] = skipped.get("answer found in no chunk", 0) + 1
            continue
        bearing = sorted(gold.bearing, key=order.__getitem__)
        out.append(ex.Question(q.question, q.answers[0], tuple(bearing)))
    return out


def _best_first(q: ex.Question, d: ex.Distractors) -> ex.Question:
    """The gold chunk retrieval would rank highest first (the one shown)."""
    if len(q.gold) < 2:
        return q
    order = {i: r for r, i in enumerate(d.rank(q.question))}
    gold = tuple(sorted(q.gold, key=lambda i: order.get(i, len(order))))
    return ex.Question(q.question, q.answer, gold)


def write_dataset(out_dir: Path, name: str, fmt: Format, items: list[ex.Example]) -> bool:
    """`<name>.json` and its dataset_info.json entry (others kept); True when an entry of
    that name was replaced. Loaded back with the trainer's reader."""
    out_dir.mkdir(parents=True, exist_ok=True)
    info_path = out_dir / ds.DATA_CONFIG
    info = ds.read_dataset_info(out_dir) if info_path.is_file() else {}
    replaced = name in info
    to_record = ex.sharegpt_record if fmt == "sharegpt" else ex.alpaca_record
    records = [to_record(e) for e in items]
    atomic.write_text(
        out_dir / f"{name}.json", json.dumps(records, ensure_ascii=False, indent=1) + "\n"
    )
    info[name] = {"file_name": f"{name}.json", **ex.DATASET_INFO[fmt]}
    atomic.write_json(info_path, info)
    ds.load_dataset(name, out_dir, stage="sft")
    return replaced


def synthesize(
    s: RagSettings,
    req: SynthRequest,
    pool: EmbedderPool,
    progress: Progress | None = None,
    teacher: Teacher | None = None,
) -> SynthResult:
    """Write the dataset; `teacher` (tests) replaces the client made from req.teacher."""
    req.check()
    top_k = req.top_k or s.top_k
    passages, problems = load_passages(s, req, pool)
    distractors = ex.Distractors(passages)
    skipped: dict[str, int] = {}
    stats: TeacherStats | None = None
    progress_file: Path | None = None
    if req.qa is not None:
        questions = qa_questions(req.qa, passages, skipped)
    else:
        assert req.teacher is not None
        asked = passages[: req.max_chunks] if req.max_chunks else passages
        progress_file = req.out_dir / f"{req.name}.teacher.jsonl"
        client = teacher or Teacher(req.teacher)
        try:
            pairs, stats = teacher_pairs(asked, client, progress_file, progress)
        finally:
            if teacher is None:
                client.close()
        questions = [
            ex.Question(pair.question, pair.answer, (pid,))
            for pid, found in pairs.items()
            for pair in found
        ]
    rng = random.Random(req.seed)
    items = [
        ex.build_example(
            _best_first(q, distractors),
            distractors,
            top_k=top_k,
            distractor_only=req.distractor_only,
            rng=rng,
        )
        for q in questions
    ]
    if not items:
        raise BadInput(
            "No training example could be made"
            + (
                f": the teacher gave no usable pair for {stats.chunks} chunks."
                if stats
                else " from the QA set."
            ),
            hint="Use a stronger teacher model, or a QA set whose answers are in the documents.",
        )
    replaced = write_dataset(req.out_dir, req.name, req.format, items)
    return SynthResult(
        name=req.name,
        format=req.format,
        data_file=req.out_dir / f"{req.name}.json",
        dataset_info=req.out_dir / ds.DATA_CONFIG,
        passages=len(passages),
        questions=len(questions),
        examples=len(items),
        abstentions=sum(e.gold is None for e in items),
        top_k=top_k,
        skipped=skipped,
        teacher=stats,
        progress_file=progress_file,
        problems=problems,
        replaced=replaced,
    )
