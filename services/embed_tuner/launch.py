"""`embed tune` over several processes: the parent starts torchrun, each worker tunes.

Same shape as the LLM trainer's launch (services/trainer/launch.py): the request goes to
the workers (tune_worker.py) as JSON, every rank trains (MNRL gathers the other ranks'
passages, so each query still sees the whole global batch as negatives), rank 0 writes
the registry entry. Rank 0's progress comes back to the parent as JSON lines on stdout
and drives the same progress bar a one-process run shows; anything else the workers
print passes through.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from services.common import distributed
from services.common.distributed import Launch, die_with_parent, torchrun_command
from services.common.errors import TunestackError
from services.common.records import EmbedderRecord
from services.common.registry import Entry, Registry
from services.common.settings import process_environ
from services.embed_tuner.settings import EmbedSettings
from services.embed_tuner.trainer_run import Progress

WORKER = "services.embed_tuner.tune_worker"  # run by torchrun, never imported here
PROGRESS = "tunestack-progress "  # prefix of rank 0's progress lines to the parent


def request_to_json(req: Any) -> dict[str, Any]:
    def plain(v: Any) -> Any:
        return str(v) if isinstance(v, Path) else v

    return {
        k: ({kk: plain(vv) for kk, vv in v.items()} if isinstance(v, dict) else plain(v))
        for k, v in dataclasses.asdict(req).items()
    }


def tune_data_parallel(
    s: EmbedSettings, registry: Registry, req: Any, launch: Launch, progress: Progress
) -> Entry[EmbedderRecord]:
    """Run the workers on this node; return the tuned embedder's registry entry."""
    progress(0, 1, f"data-parallel: {launch.world_size} processes on {launch.nnodes} node(s)")
    with distributed.handoff_dir(Path(s.home).expanduser()) as tmp:
        result = tmp / "result.json"
        (tmp / "request.json").write_text(json.dumps(request_to_json(req)))
        args = ["--request", str(tmp / "request.json"), "--result", str(result)]
        proc = subprocess.Popen(
            torchrun_command(launch, WORKER, args),
            env=process_environ(),
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=die_with_parent,  # only a prctl: safe between fork and exec
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(PROGRESS):
                step, total, note = json.loads(line[len(PROGRESS) :])
                progress(step, total, note)
            else:
                sys.stderr.write(line)
        code = proc.wait()
        outcome = distributed.read_outcome(result)
    if code != 0 or (outcome is None and launch.node_rank == 0):
        raise TunestackError(
            f"Tuning stopped before it finished (torchrun exit code {code}).",
            hint="See the error above. Rerun the same command to resume from the last checkpoint.",
        )
    return registry.embedder(req.name)  # node 0 wrote it on the shared registry
