"""A full disk is a clear error everywhere: the CLI's failure path, the services' writes
(disk_full_names), llama.cpp's child processes, the API's jobs and answers. Without a
real full disk: tests/reliability/test_faults.py fills a tmpfs during ingest, `embed
tune` and `llm export`."""

from __future__ import annotations

import errno
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from platform_cli.context import run
from platform_cli.main import app as cli
from services.common import errors
from services.common.errors import BadInput, DiskFull, TunestackError, disk_full_names
from services.converter import convert
from services.embed_tuner import service as embed_service
from services.embed_tuner.tune import drop_incomplete_checkpoints
from services.rag_api import http_errors
from services.rag_api.jobs import JobManager

FULL = "No space left on device"


class SafetensorError(Exception):
    """What safetensors raises (its Rust I/O error in words, no errno)."""


def enospc(path: Path | None = None, code: int = errno.ENOSPC) -> OSError:
    return OSError(code, FULL, str(path) if path else None)


def nothing_free(monkeypatch: pytest.MonkeyPatch) -> None:
    usage = shutil.disk_usage("/")
    monkeypatch.setattr(errors.shutil, "disk_usage", lambda p: usage._replace(free=4096))


# ---- the CLI ------------------------------------------------------------------------------


def tune_failing(monkeypatch: pytest.MonkeyPatch, home: Path, error: BaseException) -> Any:
    """`tunestack embed tune` whose service fails with `error`."""

    def tune_embedder(*a: Any, **kw: Any) -> Any:
        raise error

    monkeypatch.setattr(embed_service, "tune_embedder", tune_embedder)
    return CliRunner().invoke(
        cli,
        ["embed", "tune", "--pairs", str(home / "pairs.json"), "--name", "kb"],
        env={"TUNESTACK_HOME": str(home), "TUNESTACK_MODE": "local", "COLUMNS": "300"},
    )


def test_cli_turns_enospc_into_the_disk_full_message_naming_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = tmp_path / "models" / "embedders" / ".work-kb" / "checkpoint-4" / "x.safetensors"
    r = tune_failing(monkeypatch, tmp_path, enospc(weights))
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    assert "Traceback" not in r.output and "Errno" not in r.output
    assert (
        "error: The disk is full: nothing more could be written to the folder "
        "models/embedders/.work-kb/checkpoint-4; the command was not completed." in r.stderr
    ), r.stderr
    assert (
        "hint: Free some space on that disk (df -h shows it), then rerun the same command."
        in r.stderr
    )


def test_cli_disk_full_without_a_file_name_or_errno(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = tune_failing(monkeypatch, tmp_path, enospc(code=errno.EDQUOT))
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "written to the disk that holds TUNESTACK_HOME;" in r.stderr, r.stderr
    words = SafetensorError(f"Error while serializing: I/O error: {FULL} (os error 28)")
    r = tune_failing(monkeypatch, tmp_path, words)
    assert r.exit_code == 1 and "The disk is full" in r.stderr, r.stderr


def test_cli_other_errors_keep_their_traceback() -> None:
    def denied() -> None:
        raise PermissionError(errno.EACCES, "Permission denied", "/x")

    with pytest.raises(PermissionError):
        run(denied)
    with pytest.raises(SystemExit) as exc:
        run(lambda: (_ for _ in ()).throw(BadInput("bad")))
    assert exc.value.code == 1


# ---- the services' writes -------------------------------------------------------------------


def test_disk_full_names_names_the_folder_it_guards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "models" / "llm" / "run"
    for raised in (
        enospc(folder / ".tmp-export-x" / "gguf" / "a.gguf"),
        SafetensorError(f"I/O error: {FULL} (os error 28)"),
        TunestackError(f"llama.cpp's convert_hf_to_gguf.py failed:\nOSError: [Errno 28] {FULL}"),
        DiskFull(),  # raised where the folder is not known (a child process, the quantizer)
    ):
        with pytest.raises(DiskFull) as exc, disk_full_names(folder, tmp_path):
            raise raised
        assert exc.value.folder == folder and "the folder models/llm/run;" in exc.value.message
        assert exc.value.status_code == 507
    # torch.save's bare RuntimeError: a full disk only when the disk is (nearly) full
    with pytest.raises(RuntimeError, match="unexpected pos"), disk_full_names(folder, tmp_path):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    nothing_free(monkeypatch)
    with pytest.raises(DiskFull), disk_full_names(folder, tmp_path):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    with pytest.raises(BadInput), disk_full_names(folder, tmp_path):
        raise BadInput("not a disk problem")


def test_converter_child_failing_on_a_full_disk_is_disk_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """llama.cpp's converter runs in a child process: its ENOSPC arrives as words, or only
    as numpy's "N requested and M written" with the output disk left full."""
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "says_enospc.py").write_text(
        f"def main():\n    raise OSError(28, {FULL!r})\n", encoding="utf-8"
    )
    (scripts / "short_write.py").write_text(
        "def main():\n    raise OSError('884736 requested and 474160 written')\n",
        encoding="utf-8",
    )
    with pytest.raises(DiskFull):
        convert.run_converter(scripts, [], script="says_enospc.py", writes=tmp_path)
    with pytest.raises(TunestackError, match=r"short_write\.py failed") as exc:
        convert.run_converter(scripts, [], script="short_write.py", writes=tmp_path)
    assert not isinstance(exc.value, DiskFull)  # room left: some other failure
    nothing_free(monkeypatch)
    with pytest.raises(DiskFull):
        convert.run_converter(scripts, [], script="short_write.py", writes=tmp_path)


def test_tune_keeps_complete_checkpoints_and_drops_the_cut_short_one(tmp_path: Path) -> None:
    wd = tmp_path / ".work-kb"
    done = wd / "checkpoint-2"
    done.mkdir(parents=True)
    (done / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    cut = wd / "checkpoint-4"
    cut.mkdir()
    (cut / "model.safetensors").write_bytes(b"\0" * 64)
    drop_incomplete_checkpoints(wd)
    assert done.is_dir() and not cut.exists()
    shutil.rmtree(done)
    cut.mkdir()
    drop_incomplete_checkpoints(wd)
    assert not wd.exists()  # nothing to resume from: the work dir goes


# ---- the API: jobs and answers ------------------------------------------------------------------


def test_job_failing_on_a_full_disk_records_the_clear_message(tmp_path: Path) -> None:
    m = JobManager(state_dir=tmp_path / "run" / "jobs", home=tmp_path)
    report = tmp_path / "reports" / "eval-1" / "report.json"

    def body(_: Any) -> dict[str, Any]:
        raise enospc(report)

    job = m.submit("eval", {}, body, resume="tunestack embed eval --dataset qa.json --model a")
    deadline = time.monotonic() + 10
    while (info := m.get(job.id))["status"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    m.shutdown()
    err = info["error"]
    assert info["status"] == "failed" and err["error"] == "DiskFull", info
    assert "the folder reports/eval-1; the job was not completed." in err["message"]
    again = "then run it again: tunestack embed eval --dataset qa.json --model a."
    assert err["hint"].endswith(again), err
    assert str(tmp_path) not in json.dumps(info) and "Traceback" not in json.dumps(info)


def test_api_answers_a_full_disk_with_507_in_its_own_words(tmp_path: Path) -> None:
    api = FastAPI()
    http_errors.install(api, roots=(tmp_path,))

    @api.get("/oserror")
    def oserror() -> None:
        raise enospc(tmp_path / "uploads" / "kb" / "a.pdf")

    @api.get("/service")
    def service() -> None:
        with disk_full_names(tmp_path / "reports", tmp_path):
            raise SafetensorError(f"I/O error: {FULL} (os error 28)")

    with TestClient(api) as c:
        for path, folder in (("/oserror", "uploads/kb"), ("/service", "reports")):
            r = c.get(path)
            assert r.status_code == 507, r.text
            body = r.json()
            assert body["error"] == "DiskFull" and str(tmp_path) not in r.text
            assert f"the folder {folder}; the request was not completed." in body["message"]
            assert body["hint"].endswith("then send the request again.")
