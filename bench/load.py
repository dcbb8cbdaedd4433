"""Load on a running API: N concurrent users mixing retrieve, RAG chat, embeddings and
ingest for a fixed time; prints p50/p95 per operation, requests/s, errors, and the peak
RSS of the API process when given its pid.

Each user is a closed loop (send, wait for the answer, send the next) over one asyncio
httpx client, picking each operation at random by weight (MIX). The LLM server answers
one request at a time, so chats beyond --chat-slots (default 1) in flight would only queue
behind it (minutes at 32 users on 2 cores): a user that draws chat while the slots are
taken draws again among the others. Chats may take up to CHAT_TIMEOUT_S (the API's own
LLM timeout, TUNESTACK_RAG_LLM_TIMEOUT_S, should be as long).

An error is any answer other than 200 (a 429 from the per-key limits counts: raise
TUNESTACK_RAG_RATE_PER_MINUTE / TUNESTACK_RAG_MAX_CONCURRENT for a load test, or give each
user its own key) and any transport failure or timeout. Before the clock starts the sample
corpus is ingested into --collection (retrieve and chat ask it); each ingest of the mix
uploads one new small file into the user's own collection (<collection>-ingest-<user>), so
ingests measure the write path, not the collection lock.

    .venv/bin/python bench/load.py --url http://127.0.0.1:8000 --key KEY \\
        --users 32 --seconds 60 [--pid API_PID] [--json out.json]

`make test-reliability` runs it (tests/reliability/test_load.py) against its own API.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "samples" / "corpus"
QUESTIONS = [
    "How many vacation days do employees get?",
    "Who approves travel expenses?",
    "What is the warranty period?",
    "How do I reset the device?",
    "What are the on-call hours?",
    "How are returns shipped?",
    "What does the security policy say about passwords?",
    "Which products are in the catalog?",
]
# relative weights of the operations in the mix
MIX = {"retrieve": 4, "embeddings": 3, "chat": 2, "ingest": 1}
CHAT_MAX_TOKENS = 8
CHAT_TOP_K = 1
# a chat waits for the LLM server, which shares the CPU with everything else here
CHAT_TIMEOUT_S = 300.0


@dataclass
class OpStats:
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    # time.monotonic() of each error: a chaos run tells errors at a kill from later ones
    error_at: list[float] = field(default_factory=list)

    def fail(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1
        self.error_at.append(time.monotonic())


@dataclass
class LoadResult:
    users: int
    seconds: float
    ops: dict[str, OpStats]
    peak_rss_mb: float | None = None
    sampled_rss_mb: float | None = None

    @property
    def requests(self) -> int:
        return sum(len(s.latencies_ms) + s.errors for s in self.ops.values())

    @property
    def errors(self) -> int:
        return sum(s.errors for s in self.ops.values())

    def summary(self) -> dict[str, Any]:
        rows = {}
        for name, s in sorted(self.ops.items()):
            lat = sorted(s.latencies_ms)
            rows[name] = {
                "requests": len(lat) + s.errors,
                "errors": s.errors,
                "error_kinds": s.error_kinds,
                "p50_ms": round(percentile(lat, 50), 1) if lat else None,
                "p95_ms": round(percentile(lat, 95), 1) if lat else None,
                "req_per_s": round((len(lat) + s.errors) / self.seconds, 2),
            }
        return {
            "users": self.users,
            "seconds": round(self.seconds, 1),
            "requests": self.requests,
            "errors": self.errors,
            "req_per_s": round(self.requests / self.seconds, 2),
            "peak_rss_mb": self.peak_rss_mb,
            "sampled_rss_mb": self.sampled_rss_mb,
            "ops": rows,
        }

    def table(self) -> str:
        s = self.summary()
        lines = [
            f"{'operation':<11} {'requests':>8} {'errors':>6} {'p50 ms':>8} {'p95 ms':>8} "
            f"{'req/s':>7}"
        ]
        for name, r in s["ops"].items():
            p50 = "-" if r["p50_ms"] is None else f"{r['p50_ms']:.0f}"
            p95 = "-" if r["p95_ms"] is None else f"{r['p95_ms']:.0f}"
            lines.append(
                f"{name:<11} {r['requests']:>8} {r['errors']:>6} {p50:>8} {p95:>8} "
                f"{r['req_per_s']:>7.2f}"
            )
        lines.append(
            f"{'all':<11} {s['requests']:>8} {s['errors']:>6} {'':>8} {'':>8} "
            f"{s['req_per_s']:>7.2f}"
        )
        lines.append(f"{s['users']} users, {s['seconds']} s")
        if self.peak_rss_mb is not None:
            lines.append(
                f"API peak RSS: {self.peak_rss_mb:.0f} MB (VmHWM, process lifetime); "
                f"highest sampled during the run: {self.sampled_rss_mb:.0f} MB"
            )
        for name, r in s["ops"].items():
            if r["error_kinds"]:
                lines.append(f"errors of {name}: {r['error_kinds']}")
        return "\n".join(lines)


def percentile(sorted_values: list[float], p: float) -> float:
    if len(sorted_values) == 1:
        return sorted_values[0]
    return statistics.quantiles(sorted_values, n=100, method="inclusive")[int(p) - 1]


def rss_mb(pid: int, field_name: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


async def seed(client: httpx.AsyncClient, collection: str) -> None:
    """The collection retrieve and chat ask: the sample corpus (or a few lines)."""
    files = [("files", (p.name, p.read_bytes())) for p in sorted(CORPUS.glob("*")) if p.is_file()]
    if not files:
        files = [
            ("files", (f"q{i}.md", f"# Note {i}\n\n{q}\n".encode()))
            for i, q in enumerate(QUESTIONS)
        ]
    r = await client.post("/v1/ingest", data={"collection": collection}, files=files, timeout=600)
    if r.status_code != 200:
        raise SystemExit(f"seeding {collection} failed: {r.status_code} {r.text[:300]}")


class User:
    def __init__(
        self,
        n: int,
        client: httpx.AsyncClient,
        collection: str,
        stats: dict[str, OpStats],
        chat_slots: asyncio.Semaphore,
    ) -> None:
        self.n = n
        self.client = client
        self.collection = collection
        self.stats = stats
        self.chat_slots = chat_slots
        self.rng = random.Random(n)
        self.sent = 0
        self.ops: dict[str, Callable[[], Awaitable[httpx.Response]]] = {
            "retrieve": self.retrieve,
            "embeddings": self.embeddings,
            "chat": self.chat,
            "ingest": self.ingest,
        }

    def question(self) -> str:
        return self.rng.choice(QUESTIONS)

    def retrieve(self) -> Awaitable[httpx.Response]:
        mode = self.rng.choice(["dense", "bm25", "hybrid"])
        body = {"collection": self.collection, "query": self.question(), "mode": mode, "top_k": 4}
        return self.client.post("/v1/retrieve", json=body)

    def embeddings(self) -> Awaitable[httpx.Response]:
        body = {"model": "all-minilm-l6-v2", "input": [self.question() for _ in range(4)]}
        return self.client.post("/v1/embeddings", json=body)

    def chat(self) -> Awaitable[httpx.Response]:
        body = {
            "model": f"rag/{self.collection}",
            "max_tokens": CHAT_MAX_TOKENS,
            "top_k": CHAT_TOP_K,
            "temperature": 0,
            "messages": [{"role": "user", "content": self.question()}],
        }
        return self.client.post("/v1/chat/completions", json=body, timeout=CHAT_TIMEOUT_S)

    def ingest(self) -> Awaitable[httpx.Response]:
        self.sent += 1
        name = f"user{self.n}-note{self.sent}.md"
        text = f"# Note {self.sent} of user {self.n}\n\n{self.question()} Answer {self.sent}.\n"
        return self.client.post(
            "/v1/ingest",
            data={"collection": f"{self.collection}-ingest-{self.n}"},
            files=[("files", (name, text.encode()))],
        )

    async def run(self, deadline: float) -> None:
        names, weights = list(MIX), list(MIX.values())
        others = [n for n in names if n != "chat"]
        while time.monotonic() < deadline:
            op = self.rng.choices(names, weights)[0]
            if op == "chat" and self.chat_slots.locked():
                op = self.rng.choices(others, [MIX[n] for n in others])[0]
            t0 = time.perf_counter()
            try:
                if op == "chat":
                    async with self.chat_slots:
                        t0 = time.perf_counter()
                        r = await self.ops[op]()
                else:
                    r = await self.ops[op]()
            except httpx.HTTPError as e:
                self.stats[op].fail(type(e).__name__)
                continue
            ms = (time.perf_counter() - t0) * 1000
            if r.status_code == 200:
                self.stats[op].latencies_ms.append(ms)
            else:
                self.stats[op].fail(str(r.status_code))


async def run_load(
    url: str,
    key: str | None,
    users: int = 32,
    seconds: float = 60,
    collection: str = "load",
    pid: int | None = None,
    timeout: float = 120,
    chat_slots: int = 1,
    seeded: asyncio.Event | None = None,
) -> LoadResult:
    """`users` users for `seconds` after the seed ingest; `seeded` is set when that ingest
    has finished (a chaos run must not kill the replica that is still writing it)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    limits = httpx.Limits(max_connections=users + 4, max_keepalive_connections=users + 4)
    stats = {op: OpStats() for op in MIX}
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=timeout, limits=limits
    ) as client:
        await seed(client, collection)
        if seeded is not None:
            seeded.set()
        peak_sample = 0.0

        async def sample_rss(stop: asyncio.Event) -> None:
            nonlocal peak_sample
            while not stop.is_set() and pid is not None:
                peak_sample = max(peak_sample, rss_mb(pid, "VmRSS"))
                await asyncio.sleep(0.5)

        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_rss(stop))
        t0 = time.monotonic()
        deadline = t0 + seconds
        slots = asyncio.Semaphore(chat_slots)
        await asyncio.gather(
            *(User(i, client, collection, stats, slots).run(deadline) for i in range(users))
        )
        elapsed = time.monotonic() - t0
        stop.set()
        await sampler
    result = LoadResult(users, elapsed, stats)
    if pid is not None:
        result.peak_rss_mb = round(rss_mb(pid, "VmHWM"), 1)
        result.sampled_rss_mb = round(peak_sample, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--key", default=None, help="API key (admin: the mix ingests)")
    ap.add_argument("--users", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--collection", default="load")
    ap.add_argument("--chat-slots", type=int, default=1, help="chats in flight at most")
    ap.add_argument("--pid", type=int, default=None, help="the API process, for its peak RSS")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = ap.parse_args(argv)
    result = asyncio.run(
        run_load(a.url, a.key, a.users, a.seconds, a.collection, a.pid, chat_slots=a.chat_slots)
    )
    print(result.table())
    if a.json:
        a.json.write_text(json.dumps(result.summary(), indent=2) + "\n")
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main())
