"""Small ones (issue "Small ones"), each closed: a folder replaced without a moment where it
is missing, stale-temp sweeps that leave live work alone, the deployment record written
under its lock, Modelfile values keeping their quotes, and `tunestack down` never killing
a process that merely got one of our old pids.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from platform_cli.settings import StackSettings
from platform_cli.stack.local import LocalStack
from platform_cli.stack.processes import ProcSpec, start_time
from services.common import atomic
from services.common.api_schemas import LlmSwitch
from services.common.atomic import pid_alive
from services.common.locks import file_lock, lock_path
from services.converter import modelfile as mf
from services.rag_api.context import RagContext, deployment_path
from services.rag_api.llm_switch import switch_llm
from services.rag_api.settings import RagSettings
from tests.conftest import ROOT, free_port

# ---- atomic folder swap -----------------------------------------------------------------------


def test_replacing_a_folder_never_leaves_it_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was: the old folder was renamed away, then the new one in: between the two renames
    a reader (a model load, an export) found nothing at the path."""
    final = tmp_path / "merged"
    with atomic.staged_dir(final) as d:
        (d / "v").write_text("1")
    missing: list[str] = []
    real_replace = os.replace

    def watched(src: Any, dst: Any) -> None:
        real_replace(src, dst)
        if not final.exists():
            missing.append(f"{Path(src).name} -> {Path(dst).name}")

    monkeypatch.setattr(atomic.os, "replace", watched)
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            if not (final / "v").exists():
                missing.append("seen missing by a reader")

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(2, 40):
            with atomic.staged_dir(final, replace=True) as d:
                (d / "v").write_text(str(i))
    finally:
        stop.set()
        t.join()
    assert missing == []
    assert (final / "v").read_text() == "39"
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]  # no temp siblings left


def test_the_swap_falls_back_where_the_exchange_is_not_supported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    final = tmp_path / "out"
    for i in range(2):
        with atomic.staged_dir(final, replace=True) as d:
            (d / "v").write_text(str(i))
    assert (final / "v").read_text() == "1" and [p.name for p in tmp_path.iterdir()] == ["out"]


# ---- stale-temp sweeps ------------------------------------------------------------------------

STAGE_AND = """
import os, sys, time
from pathlib import Path
from services.common import atomic
with atomic.staged_dir(Path(sys.argv[1]) / "model") as tmp:
    (tmp / "weights.bin").write_bytes(b"x")
    print(tmp.name, flush=True)
    if sys.argv[2] == "die":
        os._exit(9)  # killed mid-write: the temp folder stays behind
    time.sleep(60)
"""


def stage_in_child(parent: Path, how: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(STAGE_AND), str(parent), how],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def test_a_sweep_never_deletes_a_live_process_s_work(tmp_path: Path) -> None:
    """Was: sweep_stale removed every `.tmp-*`, so one export (or model cache fill)
    deleted the folder another live one was writing into."""
    live, live_tmp = stage_in_child(tmp_path, "live")
    dead, dead_tmp = stage_in_child(tmp_path, "die")
    try:
        assert dead.wait(30) == 9
        assert (tmp_path / live_tmp).is_dir() and (tmp_path / dead_tmp).is_dir()
        with atomic.staged_dir(tmp_path / "mine") as mine:  # this process's own work
            atomic.sweep_stale(tmp_path)
            assert mine.is_dir()
        assert (tmp_path / live_tmp / "weights.bin").is_file()  # the other process's
        assert not (tmp_path / dead_tmp).exists()  # the killed one's leftover
    finally:
        live.kill()
        live.wait(10)
    # leftovers of another host (a container sharing the folder) or of older versions
    # (no pid in the name) go only once they are old
    foreign = tmp_path / ".tmp-model-00000000-1-abcdef12"
    legacy = tmp_path / ".tmp-model-abcdef12"
    for p in (foreign, legacy):
        p.mkdir()
    atomic.sweep_stale(tmp_path)
    assert foreign.is_dir() and legacy.is_dir()
    old = time.time() - atomic.FOREIGN_STALE_S - 60
    for p in (foreign, legacy):
        os.utime(p, (old, old))
    atomic.sweep_stale(tmp_path)
    assert not foreign.exists() and not legacy.exists()


# ---- the deployment record ---------------------------------------------------------------------


def test_the_deployment_record_is_written_under_its_lock(tmp_path: Path) -> None:
    """Two deploys (API and CLI, two API workers) never interleave their switch and
    record: the record is written holding run/locks/record-llm-deployment.lock."""
    s = RagSettings(home=tmp_path, warm_embedder=False)
    ctx = RagContext.from_settings(s)
    record = deployment_path(tmp_path)
    done = threading.Event()

    def deploy() -> None:
        asyncio.run(switch_llm(ctx, LlmSwitch(model="tuned-1", verify=False, run="r1")))
        done.set()

    with file_lock(lock_path(tmp_path, "record", "llm-deployment")):
        t = threading.Thread(target=deploy)
        t.start()
        time.sleep(1.0)
        assert not done.is_set() and not record.exists()
    t.join(30)
    assert done.is_set() and json.loads(record.read_text())["model"] == "tuned-1"


# ---- Modelfile quotes --------------------------------------------------------------------------


def test_modelfile_values_keep_their_quotes() -> None:
    """Was: SYSTEM \"\"\"Say "hi"\"\"\"\" read back as `Say "hi` (the first three quotes
    ended it), and PARAMETER values were JSON-escaped (`"Say \\"hi\\""`), which Ollama
    reads with the backslashes: `ollama create -f` and our /api/create disagreed."""
    m = mf.Modelfile(
        from_="./gguf/run.q8_0.gguf",
        template='{{ if .System }}"{{ .System }}"{{ end }}',
        system='Say "hi"',
        parameters={"stop": ['Say "hi"', "<｜end▁of▁sentence｜>", '"', "a\nb"], "num_ctx": [8]},
        messages=[{"role": "user", "content": '"Quoted"'}, {"role": "assistant", "content": '"'}],
    )
    text = mf.render(m)
    assert 'SYSTEM """Say "hi""""\n' in text
    assert 'PARAMETER stop "Say "hi""\n' in text  # as Ollama reads it: no escapes
    assert 'PARAMETER stop "<｜end▁of▁sentence｜>"\n' in text and "\\u" not in text
    assert mf.parse(text) == m
    # what Ollama's parser makes of hand-written lines
    assert mf.parse('FROM x\nSYSTEM "quoted"\n').system == "quoted"
    assert mf.parse("FROM x\nSYSTEM plain words\n").system == "plain words"
    assert mf.parse('FROM x\nPARAMETER temperature 0.5\nPARAMETER stop "5"\n').parameters == {
        "temperature": [0.5],
        "stop": ["5"],
    }


# ---- `tunestack down` and reused pids ----------------------------------------------------------


def test_stop_never_kills_a_process_that_got_our_old_pid(tmp_path: Path) -> None:
    """Was: stop() signalled whatever process group had the pid in run/chroma.json, so
    after our Chroma died and the pid was reused, `tunestack down` killed a stranger."""
    stack = LocalStack(StackSettings(home=tmp_path))
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        stack.run_dir.mkdir(parents=True, exist_ok=True)
        mine = start_time(stranger.pid)
        assert mine is not None
        pidfile = stack.pidfile("chroma")
        pidfile.write_text(json.dumps({"pid": stranger.pid, "start_time": mine - 1, "argv": []}))
        assert stack.pid("chroma") is None and not stack.is_running()
        assert stack.stop("chroma", timeout=1) is False
        assert stranger.poll() is None and not pidfile.exists()
        # a pid file of an older version (no start time): the command line decides
        pidfile.write_text(json.dumps({"pid": stranger.pid, "argv": ["/x/chroma", "run"]}))
        assert stack.stop("chroma", timeout=1) is False and stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait(10)
    # our own process is still stopped
    port = free_port()
    spec = ProcSpec("chroma", ["sleep", "60"], port, f"http://127.0.0.1:{port}", "http://x/")
    pid = stack.start(spec)
    assert stack.pid("chroma") == pid
    assert json.loads(stack.pidfile("chroma").read_text())["start_time"] == start_time(pid)
    assert stack.stop("chroma", timeout=5) is True
    deadline = time.monotonic() + 5
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(pid)


def test_an_unreadable_command_line_is_not_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: for a pid file without a start time, a command line that read empty counted as
    ours. On Linux 6.18 /proc/PID/cmdline reads empty for about a millisecond after exec
    (177 of 300 fresh `sleep` processes here), so CI's `tunestack down` test signalled the
    stranger it must leave alone."""
    from platform_cli.stack import processes

    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        legacy = {"pid": stranger.pid, "argv": ["/x/chroma", "run"]}
        assert processes.is_same_process(stranger.pid, legacy) is False  # retried, read
        monkeypatch.setattr(processes, "cmdline", lambda pid: None)
        assert processes.is_same_process(stranger.pid, legacy) is False
        mine = {"pid": stranger.pid, "argv": ["sleep", "60"]}
        assert processes.is_same_process(stranger.pid, mine) is False  # cannot tell: leave it
    finally:
        stranger.kill()
        stranger.wait(10)
