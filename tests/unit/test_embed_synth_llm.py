"""The LLM question path's seed and retry, against a scripted teacher.

The real teacher (the bundled SmolLM2 on llama.cpp) is exercised in
tests/integration/test_embed_tuner.py; it cannot be made to fail to write a question on
demand, so this stdlib server plays one that answers per seed as scripted.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from services.common.errors import BadInput
from services.embed_tuner.synth import LlmConfig, llm_questions, synthesize

CORPUS = {"c0": "The Garden Hub controls up to 32 lights over the OakLink mesh radio."}


class Teacher:
    def __init__(self, replies: dict[int, str]) -> None:
        self.replies = replies
        self.seeds: list[int] = []


@pytest.fixture
def teacher() -> Iterator[tuple[Teacher, str]]:
    t = Teacher({})

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            t.seeds.append(body["seed"])
            reply = {"choices": [{"message": {"content": t.replies.get(body["seed"], "")}}]}
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield t, f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()


def test_a_reply_without_questions_is_drawn_again_with_the_next_seed(
    teacher: tuple[Teacher, str], tmp_path: Path
) -> None:
    t, url = teacher
    t.replies = {7: "Sure! Here you go.", 8: "1. How many lights does the Garden Hub control?"}
    got = llm_questions(CORPUS, LlmConfig(url, "m", seed=7), 2, tmp_path / "c.jsonl")
    assert got == {"c0": ["How many lights does the Garden Hub control?"]}
    assert t.seeds == [7, 8]
    # the same seed asks the same questions on a rerun; the cache means no call at all
    assert llm_questions(CORPUS, LlmConfig(url, "m", seed=7), 2, tmp_path / "c.jsonl") == got
    assert t.seeds == [7, 8]


def test_a_teacher_that_never_writes_a_question_is_named(
    teacher: tuple[Teacher, str], tmp_path: Path
) -> None:
    t, url = teacher
    t.replies = {0: "The Garden Hub is great.", 1: "Lights."}
    with pytest.raises(BadInput) as e:
        synthesize(
            CORPUS,
            per_chunk=2,
            val_fraction=0,
            llm=LlmConfig(url, "tiny-teacher", seed=0),
            cache=tmp_path / "q.partial.jsonl",
        )
    assert "'tiny-teacher' gave no usable question for any of the 1 passages" in e.value.message
    assert "--llm-model" in (e.value.hint or "") and "q.partial.jsonl" in (e.value.hint or "")
    assert t.seeds == [0, 1]
