"""One torchrun worker of a data-parallel `embed tune` (started by launch.py).

A module of its own because it runs the service (`tune_embedder`) that starts it: the
service imports launch.py, this imports both, and nothing imports this.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from services.common import distributed
from services.common.registry import Registry
from services.embed_tuner.launch import PROGRESS, WORKER
from services.embed_tuner.service import SynthRequest, TuneRequest, tune_embedder
from services.embed_tuner.settings import EmbedSettings


def request_from_json(d: dict[str, Any]) -> TuneRequest:
    def path(v: Any) -> Path | None:
        return Path(v) if v is not None else None

    synth = dict(d.pop("synth"))
    synth["docs"], synth["corpus"] = path(synth["docs"]), path(synth["corpus"])
    d["pairs"], d["val"] = path(d["pairs"]), path(d["val"])
    return TuneRequest(**d, synth=SynthRequest(**synth))


def _report(step: int, total: int, note: str) -> None:
    if distributed.is_main():
        print(PROGRESS + json.dumps([step, total, note]), flush=True)


def worker(argv: list[str]) -> int:
    """One torchrun worker: tune with this rank; rank 0 reports to the parent."""
    p = argparse.ArgumentParser(prog=WORKER)
    p.add_argument("--request", type=Path, required=True)
    p.add_argument("--result", type=Path, required=True)
    a = p.parse_args(argv)
    s = EmbedSettings()
    req = request_from_json(json.loads(a.request.read_text(encoding="utf-8")))

    def tune() -> dict[str, Any]:
        distributed.start(s)
        tune_embedder(s, Registry(s.home_dir), req, _report)
        return {"name": req.name}

    return distributed.run_worker(a.result, s.rank, tune)


if __name__ == "__main__":
    sys.exit(worker(sys.argv[1:]))
