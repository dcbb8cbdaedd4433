"""RAG evaluation without a stack: dataset formats, gold passages, the run loop with a
scripted backend (LLM down mid-run, --resume), and the report folder."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from services.common.errors import BadInput, NotFound, ServiceUnavailable
from services.common.rag_prompt import ABSTENTION
from services.rag_api.answering import Answer, AnswerRequest
from services.rag_api.llm import LlmTarget
from services.rag_api.rag_eval.datasets import load_dataset, missing_metrics_note
from services.rag_api.rag_eval.gold import Chunk, ChunkIndex
from services.rag_api.rag_eval.judge import parse_grades
from services.rag_api.rag_eval.llms import resolve_llms
from services.rag_api.rag_eval.records import QuestionResult, RagEvalRequest
from services.rag_api.rag_eval.runner import run_rag_eval
from services.rag_api.retrieval import Hit, RetrievalResult
from services.rag_api.settings import RagSettings

PASSAGES = {
    "warranty": "The LO-200 warranty lasts two years. Batteries are covered for one year.",
    "price": "The LO-200 Path Light costs 49 EUR and ships in three days.",
    "founded": "Lumen & Oak was founded in 2016 in Utrecht by two engineers.",
}
SQUAD = {
    "version": "1.1",
    "data": [
        {
            "title": "kb",
            "paragraphs": [
                {
                    "context": PASSAGES["warranty"],
                    "qas": [
                        {
                            "id": "q1",
                            "question": "How long is the warranty?",
                            "answers": [{"text": "two years", "answer_start": 25}],
                        }
                    ],
                },
                {
                    "context": PASSAGES["price"],
                    "qas": [
                        {
                            "id": "q2",
                            "question": "How much does the Path Light cost?",
                            "answers": [{"text": "49 EUR", "answer_start": 28}],
                        }
                    ],
                },
                {
                    "context": PASSAGES["founded"],
                    "qas": [
                        {
                            "id": "q3",
                            "question": "When was Lumen & Oak founded?",
                            "answers": [{"text": "2016", "answer_start": 27}],
                        }
                    ],
                },
                {
                    "context": "Chairs are made of oak from Slovenia.",
                    "qas": [
                        {
                            "id": "q4",
                            "question": "Where does the oak come from?",
                            "answers": [{"text": "Slovenia"}],
                        }
                    ],
                },
            ],
        }
    ],
}


def write(tmp: Path, name: str, data: object) -> Path:
    p = tmp / name
    if name.endswith(".jsonl"):
        assert isinstance(data, list)
        p.write_text("".join(json.dumps(r) + "\n" for r in data))
    else:
        p.write_text(json.dumps(data, ensure_ascii=False))
    return p


# ---- datasets ------------------------------------------------------------------------------------


def test_squad_cmrc_embeddingqa_and_jsonl_load(tmp_path: Path) -> None:
    ds = load_dataset(write(tmp_path, "kb.json", SQUAD))
    assert ds.format == "squad" and [q.id for q in ds.questions] == ["q1", "q2", "q3", "q4"]
    assert ds.questions[0].answers == ("two years",)
    assert ds.questions[0].passages == (PASSAGES["warranty"],)
    cmrc = {
        "version": "v1.0",
        "data": [
            {
                "id": "T1",
                "paragraphs": [
                    {
                        "id": "T1",
                        "context": "生命数耗完即算为踢爆。",
                        "qas": [
                            {
                                "id": "T1_Q0",
                                "question": "生命数耗完即算为什么？",
                                "answers": [{"text": "踢爆", "answer_start": 8}],
                            }
                        ],
                    }
                ],
            }
        ],
    }
    assert load_dataset(write(tmp_path, "cmrc.json", cmrc)).format == "cmrc2018"
    qa = {
        "queries": {"a": "How long is the warranty?", "b": "Who sells garden gnomes?"},
        "corpus": {"d1": PASSAGES["warranty"]},
        "relevant_docs": {"a": ["d1"], "b": []},
        "answers": {"a": ["two years", "2 years"]},
    }
    eq = load_dataset(write(tmp_path, "qa.json", qa))
    assert eq.format == "embedding-qa"
    assert eq.questions[0].answers == ("two years", "2 years")
    assert eq.questions[1].unanswerable and not eq.questions[1].passages
    rows = [
        {"question": "How much is the LO-200?", "answer": "49 EUR", "source": "catalog.md"},
        {"question": "Who is the CEO?", "unanswerable": True},
    ]
    jl = load_dataset(write(tmp_path, "qs.jsonl", rows))
    assert jl.format == "jsonl" and jl.questions[0].source == "catalog.md"
    assert jl.questions[1].unanswerable and jl.questions[1].answers == ()
    # a JSON list of the same records (samples/questions.json) works too
    assert load_dataset(write(tmp_path, "qs.json", rows)).format == "jsonl"


def test_unknown_format_names_the_formats(tmp_path: Path) -> None:
    with pytest.raises(BadInput) as e:
        load_dataset(write(tmp_path, "odd.json", {"rows": [1, 2]}), "odd.json")
    assert "unknown dataset format" in e.value.message and "rows" in e.value.message
    hint = e.value.hint or ""
    assert all(f in hint for f in ("SQuAD", "CMRC 2018", "EmbeddingQAFinetuneDataset", "JSONL"))
    (tmp_path / "x.csv").write_text("question,answer\n")
    with pytest.raises(BadInput) as e:
        load_dataset(tmp_path / "x.csv", "x.csv")
    assert "not JSON" in e.value.message and "JSONL" in (e.value.hint or "")
    assert str(tmp_path) not in e.value.message  # named, never by its server path
    with pytest.raises(BadInput, match="line 2"):
        load_dataset(write(tmp_path, "bad.jsonl", [{"question": "ok"}, {"answer": "no q"}]))


def test_a_dataset_without_answers_says_which_metrics_still_run(tmp_path: Path) -> None:
    qa = {
        "queries": {"a": "How long is the warranty?"},
        "corpus": {"d1": PASSAGES["warranty"]},
        "relevant_docs": {"a": ["d1"]},
    }
    ds = load_dataset(write(tmp_path, "noans.json", qa))
    (note,) = missing_metrics_note(ds)
    assert "exact match, F1 and ROUGE-L cannot be computed" in note
    assert "retrieval hit@k and MRR" in note and "faithfulness" in note


# ---- gold passages in the collection -------------------------------------------------------------


def test_gold_chunks_by_passage_text_file_and_answer(tmp_path: Path) -> None:
    words = PASSAGES["warranty"].split()
    chunks = [  # the warranty passage split in two chunks, spacing changed by the chunker
        Chunk("w1", " ".join(words[:6]), "w.txt", "kb/w.txt"),
        Chunk("w2", "\n".join(words[5:]), "w.txt", "kb/w.txt"),
        Chunk("p1", PASSAGES["price"], "catalog.md", "kb/catalog.md"),
    ]
    index = ChunkIndex(chunks)
    qs = load_dataset(write(tmp_path, "kb.json", SQUAD)).questions
    g = index.gold(qs[0])
    assert g.in_collection is True and g.bearing == {"w1"}  # "two years" is in w1 only
    assert index.gold(qs[2]).in_collection is False  # "founded" passage not ingested
    jl = load_dataset(write(tmp_path, "q.jsonl", [{"question": "Price?", "source": "catalog.md"}]))
    assert index.gold(jl.questions[0]).bearing == {"p1"}
    free = load_dataset(write(tmp_path, "f.jsonl", [{"question": "Price?", "answer": "49 EUR"}]))
    assert index.gold(free.questions[0]).bearing == {"p1"}  # no passage: contains the answer
    assert index.gold(free.questions[0]).in_collection is None


# ---- the run ------------------------------------------------------------------------------------


class FakeBackend:
    """Retrieval by shared words over the chunks; scripted answers; an LLM that can die."""

    def __init__(self, tmp: Path, chunks: list[Chunk], fail_after: int | None = None) -> None:
        self.home = tmp
        self.reports = tmp / "reports"
        self.default_top_k = 2
        self._chunks = chunks
        self.fail_after = fail_after
        self.asked: list[tuple[str, str]] = []
        self.requests: list[AnswerRequest] = []

    async def targets(self, names: list[str]) -> dict[str, LlmTarget]:
        return {n: LlmTarget("http://llm.invalid/v1", n, "k") for n in names or ["tiny"]}

    def embedders(self, collection: str, names: list[str]) -> list[str]:
        return names or ["minilm"]

    def chunks(self, collection: str, embedder: str) -> list[Chunk]:
        return self._chunks

    async def answer(self, target: LlmTarget, req: AnswerRequest) -> Answer:
        if self.fail_after is not None and len(self.asked) >= self.fail_after:
            raise ServiceUnavailable(
                "llm", f"The LLM server is not reachable at {target.base_url}."
            )
        self.asked.append((req.question, target.model))
        self.requests.append(req)
        q = set(req.question.lower().split())
        ranked = sorted(self._chunks, key=lambda c: -len(q & set(c.text.lower().split())))
        hits = [
            Hit(c.id, c.text, c.source, c.file_name, 0, 1.0 - i / 10, rank=i + 1)
            for i, c in enumerate(ranked[: req.top_k or 2])
        ]
        text = {
            "How long is the warranty?": "The warranty lasts two years [1]",
            "How much does the Path Light cost?": "It costs 49 EUR [2]",
        }.get(req.question, "I do not know.")
        # the gate as answering applies it: the request's threshold over the best hit's
        # similarity (here the best hit scores 1.0 - overlap-less questions score 0.2)
        best = 1.0 if len(q & set(ranked[0].text.lower().split())) > 1 else 0.2
        result = RetrievalResult(req.collection, req.embedder or "", req.mode, hits, 3.0, best)
        if req.min_relevance and best < req.min_relevance:
            return Answer(ABSTENTION, result, target.model, {}, "stop", 0.01, gated=True)
        return Answer(
            text,
            result,
            target.model,
            {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60},
            "stop",
            0.5,
        )

    async def complete(self, target: LlmTarget, system: str, user: str) -> str:
        self.asked.append(("judge", target.model))
        return "correctness: 8\ngroundedness: 10" if "[1] " in user else "I think it is fine"


def chunks() -> list[Chunk]:
    return [
        Chunk("w", PASSAGES["warranty"], "w.txt", "w.txt"),
        Chunk("p", PASSAGES["price"], "p.txt", "p.txt"),
        Chunk("o", "Chairs are made of oak from Slovenia.", "o.txt", "o.txt"),
    ]


def test_run_scores_writes_the_report_and_counts_missing_passages(tmp_path: Path) -> None:
    data = write(tmp_path, "kb.json", SQUAD)
    be = FakeBackend(tmp_path, chunks())
    req = RagEvalRequest(data, "kb", llms=["tiny", "small"], limit=3, unanswerable=1, max_tokens=40)
    rep = asyncio.run(run_rag_eval(be, req))
    # the answer path gets the run's options, per combination
    first = be.requests[0]
    assert (first.collection, first.top_k, first.max_tokens) == ("kb", 2, 40)
    assert (first.mode, first.embedder, first.llm) == ("dense", "minilm", "tiny")
    assert [r.llm for r in be.requests] == ["tiny"] * 3 + ["small"] * 3
    # q3's passage is not in the collection; --unanswerable 1 finds no more such questions
    assert rep.counts == {
        "selected": 3,
        "gold_missing": 1,
        "marked_unanswerable": 0,
        "added_unanswerable": 0,
    }
    assert any("only 0 more questions" in n for n in rep.notes)
    s = rep.summary["tiny | minilm | dense"]
    assert s["questions"] == 3 and s["answerable"] == 2 and s["unanswerable"] == 1
    # "warranty lasts two years" vs "two years" and "it costs 49 eur" vs "49 eur": no
    # exact match; 2 of 4 tokens shared, all of the reference's -> F1 2/3 each
    assert s["em"] == 0.0
    assert s["f1"] == pytest.approx(2 / 3)
    assert s["hit@2"] == 1.0 and s["mrr@2"] == 1.0
    # q2's answer cites [2], the warranty chunk; the price chunk ranked first
    assert s["citation_precision"] == 0.5 and s["citation_recall"] == 0.5
    assert s["abstention"] == 1.0 and s["invented"] == 0.0  # q3: "I do not know."
    assert s["latency_p50_s"] == 0.5 and s["tokens_per_s"] == round(10 / 0.497, 2)
    files = sorted(p.name for p in rep.folder.iterdir())
    assert files == ["f1_heatmap.png", "questions.jsonl", "report.json", "report.md"]
    body = json.loads((rep.folder / "report.json").read_text())
    assert body["kind"] == "rag-eval" and body["dataset"] == "kb.json"
    assert [(r["llm"], r["f1"]) for r in body["grid"]] == [("tiny", s["f1"]), ("small", s["f1"])]
    assert str(tmp_path) not in (rep.folder / "report.json").read_text()
    lines = (rep.folder / "questions.jsonl").read_text().splitlines()
    assert len(lines) == 6  # 3 questions x 2 LLMs
    rec = QuestionResult.from_dict(json.loads(lines[1]))
    assert rec.cited == [2] and rec.retrieved[0].gold and rec.gold_rank == 1
    assert "| tiny | minilm | dense | 3 |" in (rep.folder / "report.md").read_text()
    assert not list(be.reports.glob(".rag-eval-*"))  # the partial run is gone


def test_the_gate_threshold_reaches_the_answer_path_and_the_report(tmp_path: Path) -> None:
    data = write(tmp_path, "kb.json", SQUAD)
    be = FakeBackend(tmp_path, chunks())
    off = asyncio.run(run_rag_eval(be, RagEvalRequest(data, "kb", limit=3)))
    assert off.summary["tiny | minilm | dense"]["gated"] is None  # no gate: "—"
    be = FakeBackend(tmp_path, chunks())
    rep = asyncio.run(run_rag_eval(be, RagEvalRequest(data, "kb", limit=3, min_relevance=0.5)))
    assert {r.min_relevance for r in be.requests} == {0.5}
    s = rep.summary["tiny | minilm | dense"]
    assert s["min_relevance"] == 0.5 and s["gated"] == pytest.approx(2 / 3)
    gated = [json.loads(line) for line in (rep.folder / "questions.jsonl").open()]
    assert [r["gated"] for r in gated] == [True, False, True]
    assert gated[0]["answer"] == ABSTENTION and gated[0]["abstained"]
    assert "--min-relevance 0.5" in RagEvalRequest(data, "kb", min_relevance=0.5).command("d")
    with pytest.raises(BadInput, match="min-relevance"):
        asyncio.run(run_rag_eval(be, RagEvalRequest(data, "kb", min_relevance=2.0)))


def test_unanswerable_adds_questions_whose_passage_is_absent(tmp_path: Path) -> None:
    data = write(tmp_path, "kb.json", SQUAD)
    be = FakeBackend(tmp_path, chunks()[:1])  # only the warranty passage
    rep = asyncio.run(run_rag_eval(be, RagEvalRequest(data, "kb", limit=1, unanswerable=2)))
    assert rep.counts["added_unanswerable"] == 2 and rep.counts["gold_missing"] == 0
    s = rep.summary["tiny | minilm | dense"]
    assert s["answerable"] == 1 and s["unanswerable"] == 2
    assert s["abstention"] == 0.5  # q2 is answered (invented), q3 abstains


def test_llm_down_keeps_partial_answers_and_resume_asks_only_the_rest(tmp_path: Path) -> None:
    data = write(tmp_path, "kb.json", SQUAD)
    be = FakeBackend(tmp_path, chunks(), fail_after=2)
    req = RagEvalRequest(data, "kb", limit=4)
    with pytest.raises(ServiceUnavailable) as e:
        asyncio.run(run_rag_eval(be, req))
    assert e.value.service == "llm" and "LLM 'tiny'" in e.value.message
    assert "after 2 of 4 answers" in e.value.message and "--resume" in (e.value.hint or "")
    (partial,) = be.reports.glob(".rag-eval-*")
    assert len((partial / "questions.jsonl").read_text().splitlines()) == 2
    with (partial / "questions.jsonl").open("a") as f:
        f.write('{"qid": "cut off by a kil')  # a line a kill -9 left half-written
    be2 = FakeBackend(tmp_path, chunks())
    rep = asyncio.run(run_rag_eval(be2, RagEvalRequest(data, "kb", limit=4, resume=True)))
    assert [q for q, _ in be2.asked] == [
        "When was Lumen & Oak founded?",
        "Where does the oak come from?",
    ]
    assert rep.resumed == 2 and rep.summary["tiny | minilm | dense"]["questions"] == 4
    # without --resume the same run starts over
    with pytest.raises(ServiceUnavailable):
        asyncio.run(run_rag_eval(FakeBackend(tmp_path, chunks(), fail_after=1), req))
    be3 = FakeBackend(tmp_path, chunks())
    again = asyncio.run(run_rag_eval(be3, RagEvalRequest(data, "kb", limit=4)))
    assert len(be3.asked) == 4 and any("Started over" in n for n in again.notes)


def test_bad_options_are_refused_before_anything_runs(tmp_path: Path) -> None:
    data = write(tmp_path, "kb.json", SQUAD)
    be = FakeBackend(tmp_path, chunks())
    with pytest.raises(BadInput, match="retrieval mode"):
        asyncio.run(run_rag_eval(be, RagEvalRequest(data, "kb", modes=["sparse"])))
    with pytest.raises(BadInput, match="top_k"):
        asyncio.run(run_rag_eval(be, RagEvalRequest(data, "kb", top_k=0)))
    assert be.asked == []


def test_llm_names_are_looked_up_on_configured_servers_only() -> None:
    s = RagSettings(
        llm_base_url="http://a.invalid/v1", llm_servers="http://b.invalid/v1", _env_file=None
    )
    current = LlmTarget("http://a.invalid/v1", "tiny", "key-a")
    served = {"http://a.invalid/v1": ["tiny"], "http://b.invalid/v1": ["big:latest"]}

    async def lister(t: LlmTarget) -> list[str]:
        if t.base_url not in served:
            raise ConnectionError("down")
        return served[t.base_url]

    got = asyncio.run(resolve_llms(s, current, ["tiny", "big"], lister))
    assert got["tiny"] == current
    assert got["big"].base_url == "http://b.invalid/v1" and got["big"].model == "big:latest"
    assert got["big"].api_key != "key-a"  # the configured key goes to its own server only
    with pytest.raises(NotFound) as nf:
        asyncio.run(resolve_llms(s, current, ["huge"], lister))
    assert "tiny" in (nf.value.hint or "") and "big:latest" in (nf.value.hint or "")
    served.pop("http://a.invalid/v1")  # the API's own server is down: 503 naming it
    with pytest.raises(ServiceUnavailable) as su:
        asyncio.run(resolve_llms(s, current, ["tiny"], lister))
    assert su.value.service == "llm" and "http://a.invalid/v1" in su.value.message
    with pytest.raises(ServiceUnavailable):
        asyncio.run(resolve_llms(s, current, [], lister))


def test_the_optional_judge_grades_each_answer_and_is_named_in_the_report(
    tmp_path: Path,
) -> None:
    assert parse_grades("Correctness: 7\nGroundedness: 10") == {
        "judge_correctness": 0.7,
        "judge_groundedness": 1.0,
    }
    assert parse_grades("looks good") == {"judge_correctness": None, "judge_groundedness": None}
    data = write(tmp_path, "kb.json", SQUAD)
    be = FakeBackend(tmp_path, chunks())
    rep = asyncio.run(run_rag_eval(be, RagEvalRequest(data, "kb", limit=2, judge="grader")))
    assert [m for q, m in be.asked if q == "judge"] == ["grader", "grader"]
    s = rep.summary["tiny | minilm | dense"]
    # both answers cite a passage, which the fake judge grades 8 and 10
    assert s["judge_correctness"] == 0.8 and s["judge_groundedness"] == 1.0
    assert s["judge_unreadable"] == 0
    body = json.loads((rep.folder / "report.json").read_text())
    assert body["judge"] == "grader"
    assert "judge grader" in (rep.folder / "report.md").read_text()
    plain = asyncio.run(run_rag_eval(FakeBackend(tmp_path, chunks()), RagEvalRequest(data, "kb")))
    assert plain.summary["tiny | minilm | dense"]["judge_correctness"] is None
    # a judge that does not answer in the format: no grade invented, the answers counted
    mute = FakeBackend(tmp_path, chunks())
    mute.complete = lambda *a: asyncio.sleep(0, result="Paris.")  # type: ignore[method-assign]
    rep = asyncio.run(run_rag_eval(mute, RagEvalRequest(data, "kb", limit=2, judge="mute")))
    s = rep.summary["tiny | minilm | dense"]
    assert s["judge_correctness"] is None and s["judge_unreadable"] == 2


def test_the_answer_budget_reaches_llama_cpp_as_max_tokens() -> None:
    """LangChain renames max_tokens to max_completion_tokens, which llama.cpp's server
    ignores (answers then ran to the context size); the body must carry max_tokens."""
    from langchain_core.messages import HumanMessage

    chat = LlmTarget("http://llm.invalid/v1", "m", "k").chat_model(
        temperature=0.0, max_tokens=32, streaming=False
    )
    payload = chat._get_request_payload([HumanMessage("hi")])
    assert payload.get("extra_body") == {"max_tokens": 32}
    assert "max_completion_tokens" not in payload and "max_tokens" not in payload
