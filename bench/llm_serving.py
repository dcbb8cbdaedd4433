"""Serving many users: the stack's LLM server today (llama-cpp-python's `llama_cpp.server`,
one request at a time) vs llama.cpp's own `llama-server` (parallel slots, continuous
batching), built from the same pinned, checksummed llama.cpp source, side by side.

    make llama-server                       # builds .cache/llama-server/bin/llama-server
    .venv/bin/python bench/llm_serving.py [--concurrency 1,4,8] [--repeats 3] [--json out.json]

Both servers run at once, started with the stack's own command lines
(services.llm_server.server_argv), on the same GGUF (the bundled SmolLM2-135M as the stack
serves it, F16), with the same threads (all cores) and the same context per request (2048
tokens; llama-server gets `--parallel` slots of that size). Only one of them gets
requests at a time: for each concurrency c and each repeat, the old server then the
new one answer 2c (at least 4) chats from c closed-loop clients. A chat is what the RAG API
sends (services/common/rag_prompt.rag_messages: the system prompt with ~1,500 characters of
the sample corpus as numbered passages, then a question of samples/questions.json),
greedy, at most --max-tokens new tokens.

Printed per concurrency (medians over repeats): aggregate completion tokens/s (all
tokens the clients received / wall time of the level), p50 and p95 seconds per chat, and
the new/old ratios; then each server's peak RSS (VmHWM). Prompts are the same on both
servers and both keep their default prompt reuse, as deployed: llama-cpp-python reuses
the longest common prefix with the previous request (the instruction, and the passages
when consecutive questions share a source file); llama-server reuses each slot's previous
prompt the same way (`cache_prompt`, on by default).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _harness import ROOT, free_port, wait_http

DEFAULT_BINARY = ROOT / ".cache" / "llama-server" / "bin" / "llama-server"
CTX_PER_CHAT = 2048
PASSAGE_CHARS = 1500


def chats() -> list[list[dict[str, str]]]:
    """The RAG API's messages for each sample question over its own source file's text."""
    from services.common.rag_prompt import rag_messages

    questions = json.loads((ROOT / "samples" / "questions.json").read_text(encoding="utf-8"))
    corpus = ROOT / "samples" / "corpus"
    out = []
    for q in questions:
        src = corpus / q["source"]
        if src.suffix != ".md" or not src.is_file():
            continue
        paras = [p.strip() for p in re.split(r"\n\s*\n", src.read_text(encoding="utf-8"))]
        blocks: list[str] = []
        for p in (p for p in paras if p):
            if sum(len(b) for b in blocks) + len(p) > PASSAGE_CHARS and blocks:
                break
            blocks.append(f"Passage [{len(blocks) + 1}] ({src.name}):\n{p}")
        out.append(rag_messages(q["question"], "\n\n".join(blocks)))
    return out


def server_peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"VmHWM:\s+(\d+) kB", status)
    return round(int(m.group(1)) / 1024, 1) if m else float("nan")


async def level(url: str, model: str, c: int, n: int, msgs: list, max_tokens: int) -> dict:
    """n chats from c closed-loop clients; aggregate tokens/s and per-chat latencies."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    lat: list[float] = []
    tokens = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal tokens
        while not queue.empty():
            i = queue.get_nowait()
            body = {
                "model": model,
                "messages": msgs[i % len(msgs)],
                "max_tokens": max_tokens,
                "temperature": 0,
            }
            t = time.perf_counter()
            r = await http.post(f"{url}/v1/chat/completions", json=body)
            r.raise_for_status()
            lat.append(time.perf_counter() - t)
            tokens += int(r.json()["usage"]["completion_tokens"])

    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=900) as http:
        await asyncio.gather(*(client(http) for _ in range(c)))
    wall = time.perf_counter() - t0
    lat.sort()
    return {
        "tokens_per_s": tokens / wall,
        "p50_s": statistics.median(lat),
        "p95_s": lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))],
        "chats": n,
        "tokens": tokens,
    }


def start(argv: list[str], url: str, log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        wait_http(f"{url}/v1/models", timeout=300)
    except Exception:
        proc.kill()
        sys.exit(f"{argv[0]} did not start; its log: {log.read_text()[-2000:]}")
    return proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", type=Path, default=DEFAULT_BINARY, help="llama-server")
    ap.add_argument("--concurrency", default="1,4,8")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--json", type=Path, help="write the figures here")
    a = ap.parse_args()
    if not a.binary.is_file():
        sys.exit(f"{a.binary} is missing: run `make llama-server` first.")
    levels = [int(x) for x in a.concurrency.split(",")]

    from services.common.registry import Registry
    from services.converter.servable import servable_gguf
    from services.llm_server.command import server_argv
    from services.llm_server.settings import LlmServerSettings

    msgs = chats()
    with tempfile.TemporaryDirectory() as home:
        s = LlmServerSettings(home=Path(home), port=free_port(), ctx=CTX_PER_CHAT)
        reg = Registry(s.home_dir)
        reg.ensure("llm", s.default_llm)
        _, gguf = servable_gguf(reg, s.default_llm)
        # the stack's own command lines for both engines (services.llm_server.server_argv)
        n = s.model_copy(
            update={
                "port": free_port(),
                "engine": "llama-server",
                "server_binary": a.binary,
                "parallel": max(levels),
            }
        )
        old_url = f"http://127.0.0.1:{s.port}"
        new_url = f"http://127.0.0.1:{n.port}"
        old = start(server_argv(s, gguf), old_url, Path(home) / "old.log")
        new = start(server_argv(n, gguf), new_url, Path(home) / "new.log")
        servers = {"llama_cpp.server": (old_url, old), "llama-server": (new_url, new)}
        rows: dict[str, dict[int, list[dict]]] = {k: {c: [] for c in levels} for k in servers}
        try:
            for url, _ in servers.values():  # warm-up: load pages, first-call costs
                asyncio.run(level(url, s.default_llm, 1, 1, msgs, 8))
            for r in range(a.repeats):
                for c in levels:
                    for name, (url, _) in servers.items():
                        res = asyncio.run(
                            level(url, s.default_llm, c, max(4, 2 * c), msgs, a.max_tokens)
                        )
                        rows[name][c].append(res)
                        print(
                            f"repeat {r + 1}/{a.repeats} c={c} {name:17s} "
                            f"{res['tokens_per_s']:6.1f} tok/s  p50 {res['p50_s']:5.2f} s  "
                            f"p95 {res['p95_s']:5.2f} s",
                            flush=True,
                        )
            rss = {name: server_peak_rss_mb(p.pid) for name, (_, p) in servers.items()}
        finally:
            for _, p in servers.values():
                p.terminate()
                p.wait(30)

    def med(name: str, c: int, key: str) -> float:
        return statistics.median(x[key] for x in rows[name][c])

    old_n, new_n = servers
    print(f"\nmedians of {a.repeats} repeats; {a.max_tokens} new tokens max; {gguf.name}")
    print(f"{'c':>3} | {'server':17s} | tok/s  | p50 s | p95 s | new/old tok/s | new/old p95")
    summary: dict[str, Any] = {"levels": {}, "peak_rss_mb": rss, "model": gguf.name}
    for c in levels:
        for name in servers:
            print(
                f"{c:>3} | {name:17s} | {med(name, c, 'tokens_per_s'):6.1f} | "
                f"{med(name, c, 'p50_s'):5.2f} | {med(name, c, 'p95_s'):5.2f} |",
                end="",
            )
            if name == new_n:
                tps = med(new_n, c, "tokens_per_s") / med(old_n, c, "tokens_per_s")
                p95 = med(new_n, c, "p95_s") / med(old_n, c, "p95_s")
                print(f" {tps:13.2f}x | {p95:10.2f}x")
            else:
                print()
        summary["levels"][c] = {
            name: {k: med(name, c, k) for k in ("tokens_per_s", "p50_s", "p95_s")}
            for name in servers
        }
    print("peak RSS MB: " + ", ".join(f"{k} {v}" for k, v in rss.items()))
    if a.json:
        a.json.write_text(json.dumps(summary, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
