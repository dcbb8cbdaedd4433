"""Typed records of a RAG evaluation: the questions read, the request, one scored answer
(a line of questions.jsonl), a combination's summary and the finished report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Lang = Literal["en", "zh"]
# questions of the selection (--limit) / added by --unanswerable
Role = Literal["selected", "added-unanswerable"]


@dataclass(frozen=True)
class EvalQuestion:
    id: str
    question: str
    answers: tuple[str, ...] = ()  # reference answers; empty: none known
    passages: tuple[str, ...] = ()  # gold passage texts; empty: unknown
    source: str | None = None  # a file the answer is in (JSONL `source`)
    unanswerable: bool = False  # the dataset says the passages do not answer it


@dataclass
class EvalDataset:
    name: str
    format: str  # squad | cmrc2018 | embedding-qa | jsonl
    questions: list[EvalQuestion]

    @property
    def has_answers(self) -> bool:
        return any(q.answers for q in self.questions)

    @property
    def has_passages(self) -> bool:
        return any(q.passages or q.source for q in self.questions)


@dataclass(frozen=True)
class Combo:
    llm: str
    embedder: str
    mode: str

    @property
    def key(self) -> str:
        return f"{self.llm} | {self.embedder} | {self.mode}"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class RagEvalRequest:
    dataset: Path
    collection: str
    dataset_name: str = ""  # shown in reports instead of the path (default: the file name)
    llms: list[str] = field(default_factory=list)  # empty: the LLM the API serves
    embedders: list[str] = field(default_factory=list)  # empty: the collection's default build
    modes: list[str] = field(default_factory=lambda: ["dense"])
    top_k: int | None = None  # None: TUNESTACK_RAG_TOP_K
    max_tokens: int | None = None  # None: TUNESTACK_RAG_MAX_TOKENS, as the API answers
    limit: int | None = None  # the first N questions
    unanswerable: int = 0  # add N questions whose gold passage is not in the collection
    resume: bool = False
    judge: str | None = None  # a model on a configured server that grades each answer
    # the relevance gate: None = each build's calibrated threshold, 0 = off
    min_relevance: float | None = None
    made_by: str = "tunestack rag eval"

    @property
    def shown_name(self) -> str:
        return self.dataset_name or self.dataset.name

    def params(self) -> dict[str, Any]:
        """What the run is, without the server path (a job's params, its dedupe key)."""
        return {
            "dataset": self.shown_name,
            "collection": self.collection,
            "llms": self.llms,
            "embedders": self.embedders,
            "modes": self.modes,
            "top_k": self.top_k,
            "max_tokens": self.max_tokens,
            "limit": self.limit,
            "unanswerable": self.unanswerable,
            "judge": self.judge,
            "min_relevance": self.min_relevance,
        }

    def command(self, dataset: str) -> str:
        """The CLI command that runs (or, with --resume, continues) the same evaluation."""
        options = [
            *(f"--llm {n}" for n in self.llms),
            *(f"--embedder {e}" for e in self.embedders),
            *(f"--mode {m}" for m in self.modes),
            *([f"--top-k {self.top_k}"] if self.top_k else []),
            *([f"--max-tokens {self.max_tokens}"] if self.max_tokens else []),
            *([f"--limit {self.limit}"] if self.limit else []),
            *([f"--unanswerable {self.unanswerable}"] if self.unanswerable else []),
            *([f"--judge {self.judge}"] if self.judge else []),
            *([f"--min-relevance {self.min_relevance}"] if self.min_relevance is not None else []),
        ]
        return " ".join(
            ["tunestack rag eval --dataset", dataset, "--collection", self.collection, *options]
        )


@dataclass
class RetrievedChunk:
    rank: int
    id: str
    file_name: str
    chunk_index: int
    score: float
    text: str
    gold: bool  # holds the answer (see gold.py)


@dataclass
class QuestionResult:
    """One answer and its scores: a line of questions.jsonl."""

    qid: str
    question: str
    llm: str
    embedder: str
    mode: str
    lang: Lang
    role: Role
    answerable: bool  # not marked unanswerable and its gold passage is in the collection
    gold_in_collection: bool | None  # None: the dataset names no passage
    answers: list[str]
    answer: str
    abstained: bool
    cited: list[int]  # 1-based passage numbers the answer cites
    retrieved: list[RetrievedChunk]
    gold_rank: int | None  # rank of the first answer-bearing chunk among the retrieved
    scores: dict[str, float | None]
    seconds: float
    retrieval_ms: float
    prompt_tokens: int
    completion_tokens: int
    gated: bool = False  # the relevance gate answered (the LLM was not asked)
    min_relevance: float | None = None  # the gate's threshold in effect (None: off)

    @property
    def combo(self) -> Combo:
        return Combo(self.llm, self.embedder, self.mode)

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.qid, self.llm, self.embedder, self.mode)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuestionResult:
        d = dict(d)
        d["retrieved"] = [RetrievedChunk(**c) for c in d.get("retrieved", [])]
        return cls(**d)


@dataclass
class RagEvalReport:
    folder: Path
    dataset: str
    collection: str
    top_k: int
    combos: list[Combo]
    summary: dict[str, dict[str, Any]]  # combo key -> metrics
    counts: dict[str, int]
    notes: list[str]
    resumed: int = 0  # answers taken over from an interrupted run
