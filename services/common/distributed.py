"""Data-parallel runs: how a command becomes torchrun workers, and what each worker asks.

`tunestack llm train` launches itself the way LLaMA-Factory's `llamafactory-cli train`
does: when more than one process is wanted (NPROC_PER_NODE > 1, NNODES > 1, or
FORCE_TORCHRUN=1; on a multi-GPU machine, one process per GPU by default) the command
starts `torchrun` with a worker module, and each worker runs the same training code with
its rank. Keeping LLaMA-Factory's variable names means its multi-node recipes (and a
Kubernetes indexed Job setting NODE_RANK from the completion index) work unchanged.

Every helper here degrades to the one-process answer when no process group exists, so
single-process code paths call them without asking first.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common import atomic
from services.common.errors import BadInput, TunestackError
from services.common.settings import DataParallelSettings


@dataclass(frozen=True)
class Launch:
    """Where this node's workers sit in the job (torchrun's arguments)."""

    nproc_per_node: int
    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


def cuda_devices() -> int:
    try:
        import torch

        return int(torch.cuda.device_count())
    except Exception:  # no torch or a broken driver: plan for the CPU
        return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def plan_launch(settings: DataParallelSettings) -> Launch | None:
    """The torchrun launch this command needs, or None to run in this process.

    None inside a worker (torchrun already set WORLD_SIZE) and when one process is all
    that is wanted, as LLaMA-Factory decides it.
    """
    if settings.world_size > 1:
        return None
    nproc = settings.nproc_per_node or max(1, cuda_devices())
    if not (settings.force_torchrun or nproc > 1 or settings.nnodes > 1):
        return None
    port = settings.master_port
    if port is None:  # every node must agree on a port: only one node may pick its own
        port = free_port() if settings.nnodes == 1 else 29500
    return Launch(nproc, settings.nnodes, settings.node_rank, settings.master_addr, port)


def torchrun_command(launch: Launch, module: str, args: list[str]) -> list[str]:
    """`python -m torch.distributed.run ... -m module args`: the same interpreter and
    environment as this command, so workers import exactly this installation."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={launch.nnodes}",
        f"--node-rank={launch.node_rank}",
        f"--nproc-per-node={launch.nproc_per_node}",
        f"--master-addr={launch.master_addr}",
        f"--master-port={launch.master_port}",
        "-m",
        module,
        *args,
    ]


def die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies (PR_SET_PDEATHSIG).

    torchrun starts its workers in sessions of their own, so a kill -9 of the command (or
    of torchrun) would leave them training on, orphaned, and racing the rerun that
    resumes. Set in torchrun (by the command) and in every worker. A no-op elsewhere.
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError):  # no glibc: nothing to ask
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


# ---- rank 0 -> the command: one JSON file -------------------------------------------------


@contextlib.contextmanager
def handoff_dir(home: Path) -> Iterator[Path]:
    """A private folder under the registry home (shared by every node's processes) for the
    files the command and its workers pass each other; removed afterwards."""
    home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".parallel-", dir=home) as tmp:
        yield Path(tmp)


def read_outcome(result: Path) -> dict[str, Any] | None:
    """What rank 0 handed back (None if it wrote nothing); its error is raised here, as
    the same kind, so the command fails with the worker's message and hint."""
    if not result.is_file():
        return None
    outcome: dict[str, Any] = json.loads(result.read_text(encoding="utf-8"))
    if "error" in outcome:
        cls = BadInput if outcome.get("bad_input") else TunestackError
        raise cls(outcome["error"], hint=outcome.get("hint"))
    return outcome


def run_worker(result: Path, rank: int, work: Callable[[], dict[str, Any]]) -> int:
    """This rank's share of the run (`work`); rank 0 writes its outcome, or its error, to
    `result` for the command. The exit code for torchrun.

    On an error there is no barrier on the way out: the other ranks may be waiting in a
    collective this rank will never reach, and torchrun stops them when this one exits.
    """
    try:
        outcome = work()
    except TunestackError as e:
        if is_main():
            error = {"error": e.message, "hint": e.hint, "bad_input": isinstance(e, BadInput)}
            atomic.write_json(result, error)
        else:
            print(f"rank {rank}: {e}", file=sys.stderr, flush=True)
        return 1
    if is_main():
        atomic.write_json(result, outcome)
    finish()
    return 0


# ---- inside a worker ----------------------------------------------------------------------


def start(settings: DataParallelSettings) -> None:
    """Join the process group torchrun prepared (gloo on CPU, NCCL on GPUs).

    Joined here, before the Trainer exists, because the run decides resume and clears
    its output folder before any model loads, and those steps need barriers; accelerate
    then finds the group and uses it.
    """
    if settings.world_size <= 1:
        return
    die_with_parent()
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(settings.local_rank)
        dist.init_process_group(backend="nccl")
    else:
        dist.init_process_group(backend="gloo")


def _group() -> Any:
    try:
        import torch.distributed as dist
    except ImportError:
        return None
    return dist if dist.is_available() and dist.is_initialized() else None


def world_size() -> int:
    dist = _group()
    return int(dist.get_world_size()) if dist else 1


def is_main() -> bool:
    """Rank 0 writes the outputs, the registry entry and the log; the others compute."""
    dist = _group()
    return dist is None or dist.get_rank() == 0


def barrier() -> None:
    dist = _group()
    if dist is not None:
        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (it may write shared files, e.g. provision a base
    model into the registry); the others run it after, finding the work done."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def gather_lists(items: list[int]) -> list[int]:
    """Every rank's items, rank 0's first: the global batch in the order the 1-process run
    with the combined batch size would have seen it."""
    dist = _group()
    if dist is None:
        return items
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, items)
    return [i for part in parts for i in part]


def sum_int(value: int) -> int:
    dist = _group()
    if dist is None:
        return value
    import torch

    t = torch.tensor([value], dtype=torch.long)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return int(t.item())


def finish() -> None:
    dist = _group()
    if dist is not None:
        dist.barrier()
        dist.destroy_process_group()
