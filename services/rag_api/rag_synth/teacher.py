"""Questions and answers per chunk from a teacher LLM (any OpenAI-compatible /v1 server).

The teacher is asked for JSON, and small or chatty models rarely give only that: replies
come in code fences, after a preamble, with trailing remarks, as one object instead of a
list, or not as JSON at all. `parse_pairs` takes the first JSON value that holds pairs
and keeps the pairs that are usable (a question, and an answer grounded in the passage);
everything else is counted, never an error, so a weak teacher yields a smaller dataset
and a count saying why.

Each finished chunk is appended to a JSONL progress file (keyed by the teacher, the
prompt and the chunk's text), so a run that was stopped, or whose server went away,
resumes with the chunks not yet done. 429 and 5xx answers and dropped connections are
retried with exponential backoff (Retry-After honoured); a server that stays down stops
the run with a message naming the endpoint, the progress kept. Nothing listening at a
URL that never answered is a wrong --teacher-url or a server not started: that stops at
once instead of after a minute of retries.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from services.common.errors import BadInput, ServiceUnavailable
from services.rag_api.rag_eval.metrics import abstained
from services.rag_api.rag_synth.examples import words
from services.rag_api.rag_synth.passages import SynthPassage

PROMPT_VERSION = 1
TEACHER_SYSTEM = "You write question and answer pairs for training a document assistant."
TEACHER_PROMPT = """\
Passage (from {file_name}):
{text}

Write {n} questions that this passage answers, each with a short answer taken from the \
passage. Use the language of the passage. Reply with JSON only: a list of objects with the \
keys "question" and "answer", like [{{"question": "...", "answer": "..."}}]."""
GROUNDED = 0.5  # share of an answer's words that must occur in its passage
MAX_ANSWER_CHARS = 400
_FENCE = re.compile(r"```(?:json)?", re.IGNORECASE)

Progress = Callable[[int, int], None]
Sleep = Callable[[float], None]


@dataclass(frozen=True)
class TeacherConfig:
    base_url: str  # the server's /v1 base (…/chat/completions is appended)
    model: str
    api_key: str | None = None
    per_chunk: int = 3
    temperature: float = 0.3
    max_tokens: int | None = None  # None: 160 per question asked (a pair is ~40-80 tokens)
    timeout_s: float = 120.0
    retries: int = 4  # after the first try, on 429/5xx/connection errors
    backoff_s: float = 1.0  # first wait; doubled after each retry, capped at 60 s

    @property
    def endpoint(self) -> str:
        url = self.base_url.rstrip("/")
        return url if url.endswith("/chat/completions") else url + "/chat/completions"


@dataclass(frozen=True)
class QAPair:
    question: str
    answer: str


@dataclass
class Parsed:
    pairs: list[QAPair] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)  # why pairs were dropped

    def reject(self, why: str) -> None:
        self.rejected[why] = self.rejected.get(why, 0) + 1


@dataclass
class TeacherStats:
    chunks: int = 0  # chunks the teacher was asked about (this run and earlier ones)
    resumed: int = 0  # of which answered in an earlier run (read from the progress file)
    junk: int = 0  # chunks whose reply held no usable pair
    pairs: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


def _json_values(text: str) -> Iterator[Any]:
    """Every JSON array or object embedded in `text`, in order (fences, preambles and
    trailing text around them ignored)."""
    text = _FENCE.sub("", text)
    decoder = json.JSONDecoder()
    i = 0
    while i < len(text):
        if text[i] in "[{":
            try:
                value, end = decoder.raw_decode(text, i)
            except json.JSONDecodeError:
                i += 1
                continue
            yield value
            i = end
        else:
            i += 1


def _candidates(value: Any) -> list[Any] | None:
    """The list of pair objects a JSON value stands for, if any."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        if "question" in value:
            return [value]
        for key in ("pairs", "questions", "qa", "items", "data"):
            if isinstance(value.get(key), list):
                return list(value[key])
    return None


def parse_pairs(reply: str, passage: str, limit: int) -> Parsed:
    """The usable pairs of a teacher's reply: question and answer strings, the answer
    short, not an abstention, and grounded (GROUNDED of its words in the passage)."""
    out = Parsed()
    items = next((c for v in _json_values(reply) if (c := _candidates(v)) is not None), None)
    if items is None:
        out.reject("no JSON list of pairs")
        return out
    in_passage = set(words(passage))
    seen: set[str] = set()
    for item in items:
        q = item.get("question") if isinstance(item, dict) else None
        a = item.get("answer") if isinstance(item, dict) else None
        if not isinstance(q, str) or not isinstance(a, str) or not q.strip() or not a.strip():
            out.reject("not a question and answer")
            continue
        q, a = q.strip(), a.strip()
        aw = words(a)
        if len(q) < 8 or len(a) > MAX_ANSWER_CHARS or not aw:
            out.reject("too short or too long")
        elif abstained(a):
            out.reject("answer says it does not know")
        elif sum(w in in_passage for w in aw) < GROUNDED * len(aw):
            out.reject("answer not in the passage")
        elif q.lower() in seen:
            out.reject("duplicate")
        else:
            seen.add(q.lower())
            out.pairs.append(QAPair(q, a))
            if len(out.pairs) >= limit:
                break
    return out


def run_key(cfg: TeacherConfig) -> str:
    """What makes answers comparable across runs: the teacher and the prompt."""
    ident = [cfg.model, cfg.per_chunk, PROMPT_VERSION, TEACHER_SYSTEM, TEACHER_PROMPT]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]


def read_progress(path: Path, key: str) -> dict[str, dict[str, Any]]:
    """passage id -> its recorded outcome; a line cut off by a kill is simply redone."""
    done: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and row.get("key") == key and isinstance(row.get("id"), str):
            done[row["id"]] = row
    return done


class Teacher:
    """One OpenAI-compatible chat endpoint, asked with retries."""

    def __init__(
        self, cfg: TeacherConfig, client: httpx.Client | None = None, sleep: Sleep = time.sleep
    ) -> None:
        self.cfg = cfg
        self.client = client or httpx.Client(timeout=httpx.Timeout(cfg.timeout_s, connect=10.0))
        self.sleep = sleep
        self.reached = False  # the server has answered once (later connect errors: retried)

    def _down(self, why: str) -> ServiceUnavailable:
        return ServiceUnavailable(
            "teacher",
            f"The teacher LLM at {self.cfg.endpoint} does not answer ({why}).",
            hint="Start it or fix --teacher-url; rerun the same command to resume (finished "
            "chunks are kept in the progress file).",
        )

    def ask(self, passage: SynthPassage) -> str:
        cfg = self.cfg
        prompt = TEACHER_PROMPT.format(
            file_name=passage.file_name, text=passage.text, n=cfg.per_chunk
        )
        body = {
            "model": cfg.model,
            "messages": [
                {"role": "system", "content": TEACHER_SYSTEM},
                {"role": "user", "content": prompt},
            ],
            "temperature": cfg.temperature,
            "max_tokens": cfg.max_tokens or 160 * cfg.per_chunk,
        }
        headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
        wait = cfg.backoff_s
        for attempt in range(cfg.retries + 1):
            last = attempt == cfg.retries
            try:
                r = self.client.post(cfg.endpoint, json=body, headers=headers)
            except httpx.TransportError as e:
                # nothing listening at a server never reached: a wrong URL, not a hiccup
                if last or (isinstance(e, httpx.ConnectError) and not self.reached):
                    raise self._down(type(e).__name__) from None
                self.sleep(wait)
                wait = min(wait * 2, 60.0)
                continue
            self.reached = True
            if r.status_code == 429 or r.status_code >= 500:
                if last:
                    raise self._down(f"HTTP {r.status_code} after {cfg.retries + 1} tries")
                self.sleep(_retry_after(r) or wait)
                wait = min(wait * 2, 60.0)
                continue
            if r.status_code in (401, 403):
                raise BadInput(
                    f"The teacher LLM at {cfg.endpoint} refused the key (HTTP {r.status_code}).",
                    hint="Pass the variable holding the key with --teacher-key-env VAR.",
                )
            if r.status_code >= 400:
                raise BadInput(
                    f"The teacher LLM at {cfg.endpoint} answered HTTP {r.status_code}: "
                    f"{r.text[:200]}",
                    hint="Check --teacher-url (the server's /v1 base) and --teacher-model.",
                )
            try:
                content = r.json()["choices"][0]["message"]["content"]
            except (ValueError, KeyError, IndexError, TypeError):
                return ""  # not an OpenAI reply: counted as junk like any unusable reply
            return content if isinstance(content, str) else ""
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def close(self) -> None:
        self.client.close()


def _retry_after(r: httpx.Response) -> float | None:
    try:
        return min(float(r.headers.get("retry-after", "")), 60.0)
    except ValueError:
        return None


def teacher_pairs(
    passages: list[SynthPassage],
    teacher: Teacher,
    progress_file: Path,
    progress: Progress | None = None,
) -> tuple[dict[str, list[QAPair]], TeacherStats]:
    """passage id -> its usable pairs, asking only about passages the progress file does
    not hold yet, and appending each answer to it as soon as it is parsed."""
    key = run_key(teacher.cfg)
    done = read_progress(progress_file, key)
    stats = TeacherStats(chunks=len(passages))
    out: dict[str, list[QAPair]] = {}
    progress_file.parent.mkdir(parents=True, exist_ok=True)
    torn = False  # a kill mid-line left the file unterminated: start a fresh line
    if progress_file.is_file() and progress_file.stat().st_size:
        with progress_file.open("rb") as b:
            b.seek(-1, 2)
            torn = b.read(1) != b"\n"
    with progress_file.open("a", encoding="utf-8") as f:
        if torn:
            f.write("\n")
        for i, p in enumerate(passages):
            row = done.get(p.id)
            if row is not None:
                stats.resumed += 1
            else:
                parsed = parse_pairs(teacher.ask(p), p.text, teacher.cfg.per_chunk)
                row = {
                    "key": key,
                    "id": p.id,
                    "file_name": p.file_name,
                    "pairs": [{"question": x.question, "answer": x.answer} for x in parsed.pairs],
                    "rejected": parsed.rejected,
                }
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                f.flush()
            pairs = [QAPair(str(x["question"]), str(x["answer"])) for x in row.get("pairs", [])]
            out[p.id] = pairs
            stats.pairs += len(pairs)
            stats.junk += not pairs
            for why, n in (row.get("rejected") or {}).items():
                stats.rejected[why] = stats.rejected.get(why, 0) + int(n)
            if progress:
                progress(i + 1, len(passages))
    return out, stats
