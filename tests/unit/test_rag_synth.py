"""`tunestack llm synth` (services/rag_api/rag_synth): RAFT-style examples, the serving
prompt, the dataset files `llm train` reads, and the teacher path (resume, junk, errors).

The teacher is a strict fake OpenAI server (`FakeTeacher`): a real HTTP server on
127.0.0.1 that answers POST /v1/chat/completions only, checks the request's shape and the
bearer key, and replies with scripted contents. It is a fake: its answers are canned, not
a model's; tests/integration/test_rag_synth.py asks the real llama.cpp server.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from platform_cli.main import app as cli
from services.common.embedders import EmbedderPool
from services.common.errors import BadInput, ServiceUnavailable
from services.common.rag_prompt import ABSTENTION, format_context
from services.common.registry import Registry
from services.rag_api.prompts import PROMPT
from services.rag_api.rag_eval.metrics import abstained, strip_citations
from services.rag_api.rag_synth import examples as ex
from services.rag_api.rag_synth import service as synth
from services.rag_api.rag_synth.passages import SynthPassage, passage_id
from services.rag_api.rag_synth.teacher import Teacher, TeacherConfig, parse_pairs, run_key
from services.rag_api.retrieval import Hit
from services.rag_api.settings import RagSettings
from services.trainer import datasets as ds
from tests.conftest import SAMPLES, free_port

TOPICS = [
    (
        "The Garden Hub costs 119 EUR and controls up to 32 lights.",
        "How much does the Garden Hub cost?",
        "119 EUR",
    ),
    (
        "The Path Light has a warranty of 3 years from the date of purchase.",
        "How long is the Path Light warranty?",
        "3 years",
    ),
    (
        "Support answers the phone Monday to Friday from 09:00 to 17:00 CET.",
        "When is the support phone line open?",
        "Monday to Friday from 09:00 to 17:00 CET",
    ),
    (
        "Employees get 28 days of paid annual leave per calendar year.",
        "How many days of paid leave do employees get?",
        "28 days",
    ),
    (
        "Passwords must be at least 14 characters long and unique.",
        "What is the minimum password length?",
        "14 characters",
    ),
    (
        "A SEV1 page must be acknowledged within 15 minutes by the on-call engineer.",
        "How fast must a SEV1 page be acknowledged?",
        "within 15 minutes",
    ),
    (
        "Delivery to the United Kingdom takes 4 to 7 business days.",
        "How long does delivery to the UK take?",
        "4 to 7 business days",
    ),
    (
        "The hotel limit on business trips is 140 EUR per night.",
        "What is the hotel limit per night?",
        "140 EUR per night",
    ),
    (
        "Hold the reset button for 12 seconds until the LED flashes white.",
        "How long must the reset button be held?",
        "12 seconds",
    ),
    (
        "The company was founded in Lisbon in 2016 by two engineers.",
        "Where was the company founded?",
        "in Lisbon",
    ),
]
FILLER = [
    f"Note {i}: the garden lights, the hub, the app and the warranty are described in other "
    f"chapters of this handbook, which also covers returns and support."
    for i in range(6)
]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    p = tmp_path / "handbook.jsonl"
    texts = [t for t, _, _ in TOPICS] + FILLER
    p.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return p


@pytest.fixture
def qa(tmp_path: Path) -> Path:
    p = tmp_path / "qa.jsonl"
    rows: list[dict[str, Any]] = [{"question": q, "answer": a} for _, q, a in TOPICS]
    rows.append({"question": "Who is the CEO of the company?", "unanswerable": True})
    rows.append({"question": "What colour is the sky on Mars?", "answer": "butterscotch"})
    p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return p


def settings(tmp_path: Path) -> RagSettings:
    return RagSettings(home=tmp_path / "home", top_k=4)


def pool(tmp_path: Path) -> EmbedderPool:
    return EmbedderPool(Registry(tmp_path / "home"))  # --corpus: no embedder is loaded


def run_qa(tmp_path: Path, corpus: Path, qa: Path, **kw: Any) -> synth.SynthResult:
    req = synth.SynthRequest(out_dir=tmp_path / "out", corpus=corpus, qa=qa, **kw)
    return synth.synthesize(settings(tmp_path), req, pool(tmp_path))


def passages_of(system: str) -> list[str]:
    return re.findall(r"Passage \[\d+\] \([^)]*\):\n(.*?)(?=\n\nPassage \[|\Z)", system, re.S)


# ---- examples ---------------------------------------------------------------------------


def test_gold_at_a_random_position_cited_by_its_number_and_abstentions_detected(
    tmp_path: Path, corpus: Path, qa: Path
) -> None:
    res = run_qa(tmp_path, corpus, qa, distractor_only=0.0)
    # 10 answerable + 1 unanswerable + 1 whose answer is in no passage (skipped, counted)
    assert (res.questions, res.examples, res.abstentions) == (11, 11, 1)
    assert res.skipped == {"answer found in no chunk": 1}
    recs = json.loads(res.data_file.read_text(encoding="utf-8"))
    positions = []
    by_q = {q: (t, a) for t, q, a in TOPICS}
    for r in recs:
        system, user, answer = (t["value"] for t in r["conversations"])
        shown = passages_of(system)
        assert len(shown) == 4 and len(set(shown)) == 4
        if user not in by_q:  # the unanswerable question: distractors only, abstains
            assert abstained(answer) and not re.search(r"\[\d\]", answer)
            continue
        gold_text, ref = by_q[user]
        n = shown.index(gold_text) + 1
        positions.append(n)
        assert answer == f"{ref} [{n}]."  # cites the gold passage's number
        assert strip_citations(answer).rstrip(". ") == ref  # rag eval scores the bare answer
        assert not abstained(answer)
        # no distractor gives the answer away
        assert sum(ref.lower() in s.lower() for s in shown) == 1
    assert len(set(positions)) >= 3  # the gold passage moves around


def test_distractor_only_share_follows_the_setting_and_is_seeded(tmp_path: Path) -> None:
    texts = [f"Product {i} costs {100 + i} EUR and ships from warehouse {i}." for i in range(40)]
    ps = [SynthPassage(passage_id("c.txt", None, t), t, "c.txt") for t in texts]
    d = ex.Distractors(ps)
    qs = [
        ex.Question(f"How much does product {i} cost?", f"{100 + i} EUR", (ps[i].id,))
        for i in range(40)
    ]

    def build(seed: int, share: float) -> list[ex.Example]:
        rng = random.Random(seed)
        return [ex.build_example(q, d, top_k=4, distractor_only=share, rng=rng) for q in qs * 5]

    items = build(1, 0.2)
    only = [e for e in items if e.gold is None]
    assert 0.13 < len(only) / len(items) < 0.27  # 200 draws of p = 0.2
    for e in only:
        assert e.answer == ABSTENTION and abstained(e.answer)
        q = next(q for q in qs if q.question == e.question)
        assert all(p.id not in q.gold and q.answer not in p.text for p in e.passages)
    with_gold = [e for e in items if e.gold is not None]
    counts = [sum(e.gold == n for e in with_gold) for n in range(1, 5)]
    assert min(counts) > len(with_gold) / 4 * 0.7  # every position, roughly evenly
    assert [e.answer for e in build(1, 0.2)] == [e.answer for e in items]  # seeded
    assert all(e.gold is not None for e in build(2, 0.0))
    assert all(e.gold is None for e in build(3, 1.0))


def test_distractors_are_bm25_hard_negatives_and_never_hold_the_answer() -> None:
    texts = [
        "The Garden Hub costs 119 EUR.",
        "| LO-500 | Garden Hub | 119 | EUR |",  # all the answer's words: gives it away
        "The Garden Hub connects to 2.4 GHz Wi-Fi.",
        "The Garden Hub has a three year warranty.",
        "Our office dog is called Pixel.",
        "Lunch is served at noon.",
    ]
    ps = [SynthPassage(passage_id("f", None, t), t, "f") for t in texts]
    d = ex.Distractors(ps)
    q = ex.Question("How much does the Garden Hub cost?", "119 EUR", (ps[0].id,))
    picked = d.pick(q, 2, random.Random(0))
    assert {p.text for p in picked} == set(texts[2:4])  # the on-topic ones, not filler


def test_cite_puts_the_number_before_the_final_stop() -> None:
    assert ex.cite("It costs 49 EUR.", 2) == "It costs 49 EUR [2]."
    assert ex.cite("49 EUR", 1) == "49 EUR [1]."
    assert ex.cite("签收后7天", 3) == "签收后7天 [3]。"


def test_the_prompt_is_what_the_serving_chain_sends(tmp_path: Path, corpus: Path, qa: Path) -> None:
    """System and user text of a training example == the RAG API's LangChain prompt for
    the same question and passages (retrieval hits with the same text, file and page)."""
    res = run_qa(tmp_path, corpus, qa, format="alpaca")
    rec = json.loads(res.data_file.read_text(encoding="utf-8"))[0]
    ps = [
        SynthPassage(passage_id("handbook.jsonl", None, t), t, "handbook.jsonl")
        for t in passages_of(rec["system"])
    ]
    hits = [
        Hit(p.id, p.text, "handbook.jsonl", p.file_name, i, 1.0, page=p.page)
        for i, p in enumerate(ps)
    ]
    served = PROMPT.format_messages(context=format_context(hits), question=rec["instruction"])
    assert [m.type for m in served] == ["system", "human"]
    assert [m.content for m in served] == [rec["system"], rec["instruction"]]
    # and with pages (a PDF's passages): the same layout on both sides
    paged = SynthPassage("x", "Text of page two.", "a.pdf", "2")
    e = ex.build_example(
        ex.Question("Q?", "page two", ("x",)),
        ex.Distractors([paged]),
        top_k=1,
        distractor_only=0.0,
        rng=random.Random(0),
    )
    hit = Hit("x", paged.text, "a.pdf", "a.pdf", 0, 1.0, page="2")
    served = PROMPT.format_messages(context=format_context([hit]), question="Q?")
    assert [m.content for m in served] == [e.messages[0]["content"], e.messages[1]["content"]]
    assert "Passage [1] (a.pdf, page 2):" in e.system


def test_long_passages_keep_the_gold_one_in_view() -> None:
    """format_context stops at MAX_CONTEXT_CHARS; the gold passage must not be cut off."""
    texts = [f"Chapter {i} " + "word " * 400 for i in range(6)] + ["The code is 4242."]
    ps = [SynthPassage(passage_id("f", None, t), t, "f") for t in texts]
    d = ex.Distractors(ps)
    for seed in range(20):
        e = ex.build_example(
            ex.Question("What is the code?", "4242", (ps[-1].id,)),
            d,
            top_k=4,
            distractor_only=0.0,
            rng=random.Random(seed),
        )
        assert e.gold is not None and e.passages[e.gold - 1] is ps[-1]
        assert len(e.passages) == len(passages_of(e.system)) < 4


# ---- dataset files ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["sharegpt", "alpaca"])
def test_both_formats_load_with_the_trainers_reader(
    tmp_path: Path, corpus: Path, qa: Path, fmt: str
) -> None:
    res = run_qa(tmp_path, corpus, qa, format=fmt, name="rag")
    loaded = ds.load_dataset("rag", tmp_path / "out", stage="sft")
    assert len(loaded.conversations) == res.examples == 11
    recs = json.loads(res.data_file.read_text(encoding="utf-8"))
    for conv, rec in zip(loaded.conversations, recs, strict=True):
        assert conv.system is not None and conv.system.startswith("Answer the question")
        assert [m.role for m in conv.messages] == ["user", "assistant"]
        if fmt == "alpaca":
            assert set(rec) == {"instruction", "input", "output", "system"}
            assert (conv.messages[0].content, conv.messages[1].content) == (
                rec["instruction"],
                rec["output"],
            )
        else:
            assert [t["from"] for t in rec["conversations"]] == ["system", "human", "gpt"]
            assert conv.messages[1].content == rec["conversations"][2]["value"]


def test_dataset_info_entry_is_merged_and_replaced(tmp_path: Path, corpus: Path, qa: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    other = {"file_name": "other.json", "columns": {"prompt": "instruction"}}
    (out / "dataset_info.json").write_text(json.dumps({"other": other}), encoding="utf-8")
    res = run_qa(tmp_path, corpus, qa)
    assert not res.replaced
    info = json.loads((out / "dataset_info.json").read_text(encoding="utf-8"))
    assert info["other"] == other
    assert info["rag_sft"] == {
        "file_name": "rag_sft.json",
        "formatting": "sharegpt",
        "columns": {"messages": "conversations"},
    }
    res = run_qa(tmp_path, corpus, qa, format="alpaca")
    info = json.loads((out / "dataset_info.json").read_text(encoding="utf-8"))
    assert res.replaced and set(info) == {"other", "rag_sft"}
    assert "formatting" not in info["rag_sft"]  # alpaca is LLaMA-Factory's default


def test_bad_requests_say_what_to_do(tmp_path: Path, corpus: Path, qa: Path) -> None:
    with pytest.raises(BadInput, match="exactly one of --docs DIR or --corpus FILE"):
        synth.SynthRequest(out_dir=tmp_path, qa=qa).check()
    with pytest.raises(BadInput, match="exactly one of --qa FILE"):
        synth.SynthRequest(out_dir=tmp_path, corpus=corpus).check()
    with pytest.raises(BadInput, match="sharegpt or alpaca"):
        synth.SynthRequest(out_dir=tmp_path, corpus=corpus, qa=qa, format="csv").check()  # type: ignore[arg-type]
    with pytest.raises(BadInput, match="no such folder"):
        synth.synthesize(
            settings(tmp_path),
            synth.SynthRequest(out_dir=tmp_path / "o", docs=tmp_path / "nope", qa=qa),
            pool(tmp_path),
        )


# ---- the teacher ------------------------------------------------------------------------

Reply = Callable[[str], str]  # the user prompt -> the reply's content


class FakeTeacher:
    """A strict fake OpenAI chat server on 127.0.0.1 (canned replies, real HTTP)."""

    def __init__(self, reply: Reply, key: str | None = None, status: int = 200) -> None:
        self.reply, self.key, self.status = reply, key, status
        self.prompts: list[str] = []
        self.headers: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.headers.append(str(self.headers))
                if self.path != "/v1/chat/completions":
                    return self.send(404, {"error": {"message": "not found"}})
                if fake.key and self.headers.get("Authorization") != f"Bearer {fake.key}":
                    return self.send(401, {"error": {"message": "invalid api key"}})
                if fake.status != 200:
                    return self.send(fake.status, {"error": {"message": "overloaded"}})
                msgs = body["messages"]
                assert body["model"] == "teacher-1"
                assert [m["role"] for m in msgs] == ["system", "user"]
                fake.prompts.append(msgs[1]["content"])
                content = fake.reply(msgs[1]["content"])
                self.send(
                    200, {"choices": [{"message": {"role": "assistant", "content": content}}]}
                )

            def send(self, code: int, obj: dict[str, Any]) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Iterator[FakeTeacher]:
    t = FakeTeacher(scripted)
    yield t
    t.close()


def scripted(prompt: str) -> str:
    """Good pairs for the TOPICS passages, in the shapes small models reply in; junk for
    the filler passages (prose, an invented answer, an abstention)."""
    for text, q, a in TOPICS:
        if text in prompt:
            if "Garden Hub" in text:  # a preamble, a fence, and one object not a list
                return f'Sure! Here it is:\n```json\n{{"question": "{q}", "answer": "{a}"}}\n```'
            return json.dumps([{"question": q, "answer": a}, {"question": q, "answer": a}])
    if "Note 0" in prompt:
        return "I'm sorry, I cannot help with that."
    if "Note 1" in prompt:
        return json.dumps([{"question": "What is the CEO's name?", "answer": "Zorblax Quint"}])
    if "Note 2" in prompt:
        return json.dumps([{"question": "What does chapter 9 cover?", "answer": "I do not know"}])
    return json.dumps({"pairs": [{"q": "missing keys"}]})


def teacher_req(tmp_path: Path, corpus: Path, url: str, **kw: Any) -> synth.SynthRequest:
    cfg = TeacherConfig(
        **{"base_url": url, "model": "teacher-1", "per_chunk": 2, "retries": 0, **kw}
    )
    return synth.SynthRequest(out_dir=tmp_path / "out", corpus=corpus, teacher=cfg)


def test_teacher_pairs_junk_counted_and_examples_built(
    tmp_path: Path, corpus: Path, fake: FakeTeacher
) -> None:
    res = synth.synthesize(
        settings(tmp_path), teacher_req(tmp_path, corpus, fake.url), pool(tmp_path)
    )
    t = res.teacher
    assert t is not None and (t.chunks, t.resumed, t.pairs, t.junk) == (16, 0, 10, 6)
    assert t.rejected == {
        "no JSON list of pairs": 1,
        "answer not in the passage": 1,
        "answer says it does not know": 1,
        "not a question and answer": 3,
        "duplicate": 9,
    }
    assert res.examples == res.questions == 10
    assert len(fake.prompts) == 16 and all("Write 2 questions" in p for p in fake.prompts)
    recs = json.loads(res.data_file.read_text(encoding="utf-8"))
    answers = {r["conversations"][1]["value"]: r["conversations"][2]["value"] for r in recs}
    assert re.fullmatch(r"119 EUR \[[1-4]\]\.|I do not know: .*", answers[TOPICS[0][1]])


def test_teacher_progress_resumes_without_asking_again(
    tmp_path: Path, corpus: Path, fake: FakeTeacher
) -> None:
    s, p = settings(tmp_path), pool(tmp_path)
    req = teacher_req(tmp_path, corpus, fake.url)
    first = synth.synthesize(s, dataclasses.replace(req, max_chunks=4), p)
    assert first.teacher is not None and first.teacher.resumed == 0
    assert first.progress_file is not None
    lines = first.progress_file.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 4 and len(fake.prompts) == 4
    # a run killed mid-line leaves a cut-off line: redone, not an error
    with first.progress_file.open("a", encoding="utf-8") as f:
        f.write('{"key": "')
    res = synth.synthesize(s, req, p)
    assert res.teacher is not None and (res.teacher.resumed, res.teacher.chunks) == (4, 16)
    assert len(fake.prompts) == 16  # 4 + the 12 not asked before
    assert res.examples == 10
    again = synth.synthesize(s, req, p)  # the line after the cut-off one was kept whole
    assert again.teacher is not None and again.teacher.resumed == 16 and len(fake.prompts) == 16
    # another teacher model: the old answers do not count for it
    other = TeacherConfig(base_url=fake.url, model="teacher-2", per_chunk=2, retries=0)
    assert run_key(other) != run_key(req.teacher)  # type: ignore[arg-type]
    assert {json.loads(x)["key"] for x in lines} == {run_key(req.teacher)}  # type: ignore[arg-type]


def test_key_is_sent_never_written_and_a_wrong_key_says_so(tmp_path: Path, corpus: Path) -> None:
    secret = "sk-test-0123456789"
    t = FakeTeacher(scripted, key=secret)
    try:
        res = synth.synthesize(
            settings(tmp_path),
            teacher_req(tmp_path, corpus, t.url, api_key=secret),
            pool(tmp_path),
        )
        assert res.examples == 10
        for f in (tmp_path / "out").iterdir():
            assert secret not in f.read_text(encoding="utf-8"), f
        with pytest.raises(BadInput, match=r"refused the key \(HTTP 401\)") as e:
            synth.synthesize(
                settings(tmp_path),
                teacher_req(tmp_path, corpus, t.url, api_key="wrong", per_chunk=3),
                pool(tmp_path),
            )
        assert e.value.hint is not None and "--teacher-key-env" in e.value.hint
        assert secret not in str(e.value) and "wrong" not in str(e.value)
    finally:
        t.close()


def test_a_down_or_failing_teacher_stops_with_the_endpoint_named(
    tmp_path: Path, corpus: Path
) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(
        ServiceUnavailable, match=r"at http://127\.0\.0\.1:\d+/v1/chat/completions does not answer"
    ):
        synth.synthesize(settings(tmp_path), teacher_req(tmp_path, corpus, url), pool(tmp_path))
    t = FakeTeacher(scripted, status=503)
    try:
        slept: list[float] = []
        cfg = TeacherConfig(base_url=t.url, model="teacher-1", retries=2, backoff_s=0.5)
        teacher = Teacher(cfg, sleep=slept.append)
        req = synth.SynthRequest(out_dir=tmp_path / "out", corpus=corpus, teacher=cfg)
        with pytest.raises(ServiceUnavailable, match="HTTP 503 after 3 tries") as e:
            synth.synthesize(settings(tmp_path), req, pool(tmp_path), teacher=teacher)
        assert slept == [0.5, 1.0] and "resume" in (e.value.hint or "")
    finally:
        t.close()


def test_parse_pairs_takes_what_small_models_write() -> None:
    passage = "The LO-200 Path Light costs 49 EUR and has a 3 year warranty."
    pair = '{"question": "What does the LO-200 cost?", "answer": "49 EUR"}'
    fenced = f"Here you go:\n```json\n[{pair}]\n```\nHope it helps!"
    assert [p.answer for p in parse_pairs(fenced, passage, 3).pairs] == ["49 EUR"]
    wrapped = (
        '{"pairs": [{"question": "What warranty does it have?", "answer": "3 year warranty"}]}'
    )
    assert len(parse_pairs(wrapped, passage, 3).pairs) == 1
    assert parse_pairs("no json at all", passage, 3).rejected == {"no JSON list of pairs": 1}
    many = json.dumps([{"question": f"Question number {i}?", "answer": "49 EUR"} for i in range(5)])
    assert len(parse_pairs(many, passage, 2).pairs) == 2


# ---- the CLI ----------------------------------------------------------------------------


def invoke(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(
        cli,
        ["llm", "synth", "--out", str(tmp_path / "cli-out"), *args],
        env={"TUNESTACK_HOME": str(tmp_path / "home"), "COLUMNS": "300", **(env or {})},
    )


def test_cli_messages_not_tracebacks(tmp_path: Path, corpus: Path, qa: Path) -> None:
    r = invoke(tmp_path, "--qa", str(qa))
    assert r.exit_code == 1 and "exactly one of --docs DIR or --corpus FILE" in r.stderr
    r = invoke(tmp_path, "--corpus", str(corpus), "--teacher-url", "http://127.0.0.1:9/v1")
    assert r.exit_code == 1 and "--teacher-model" in r.stderr
    r = invoke(
        tmp_path,
        "--corpus",
        str(corpus),
        "--teacher-url",
        f"http://127.0.0.1:{free_port()}/v1",
        "--teacher-model",
        "m",
        "--teacher-key-env",
        "TS_TEST_UNSET_VARIABLE",
    )
    assert r.exit_code == 1 and "TS_TEST_UNSET_VARIABLE: that variable is not set" in r.stderr
    r = invoke(
        tmp_path,
        "--corpus",
        str(corpus),
        "--teacher-url",
        f"http://127.0.0.1:{free_port()}/v1",
        "--teacher-model",
        "m",
        "--teacher-key-env",
        "TS_TEST_KEY",
        env={"TS_TEST_KEY": "sk-secret-value"},
    )
    assert r.exit_code == 1 and "does not answer" in r.stderr and "resume" in r.stderr
    assert "sk-secret-value" not in r.output and "Traceback" not in r.output
    r = invoke(
        tmp_path,
        "--corpus",
        str(corpus),
        "--qa",
        str(qa),
        "--format",
        "alpaca",
        "--distractor-only",
        "0",
    )
    assert r.exit_code == 0, r.output
    assert "11 examples (1 with distractors only" in r.stdout
    assert "skipped answer found in no chunk: 1" in r.stdout


def test_the_sample_qa_set_leaves_out_the_questions_the_demo_asks() -> None:
    demo = [q["question"] for q in json.loads((SAMPLES / "questions.json").read_text())[:3]]
    path = SAMPLES / "llm_rag" / "lumen_rag_qa.jsonl"
    qa = [json.loads(x)["question"] for x in path.read_text("utf-8").splitlines() if x]
    assert len(qa) == 23 and not set(demo) & set(qa)
