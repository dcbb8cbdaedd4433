"""Go's real text/template, driven the way Ollama executes chat templates.

Builds tests/unit/data/ollama_render.go once per test session (Debian's golang-go; .ci/run
installs it) and renders batches of (template, messages). `go_renderer()` is None when Go
is not installed, and callers say so in their skip message or fall back.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

SOURCE = Path(__file__).parent / "unit" / "data" / "ollama_render.go"
Renderer = Callable[[list[tuple[str, list[dict[str, str]]]]], list[str]]
_built: dict[str, Path] = {}


def go_renderer() -> Renderer | None:
    go = shutil.which("go")
    if go is None:
        return None
    if "bin" not in _built:
        d = Path(tempfile.mkdtemp(prefix="ollama-render-"))
        shutil.copy(SOURCE, d / "main.go")
        env = {
            **os.environ,
            "GOCACHE": str(d / "cache"),
            "GOPATH": str(d / "gopath"),
            "GOFLAGS": "-mod=mod",
            "GO111MODULE": "on",
        }
        subprocess.run(
            [go, "mod", "init", "ollamarender"], cwd=d, env=env, check=True, capture_output=True
        )
        subprocess.run(
            [go, "build", "-o", "render", "."], cwd=d, env=env, check=True, capture_output=True
        )
        _built["bin"] = d / "render"
    binary = _built["bin"]

    def render(cases: list[tuple[str, list[dict[str, str]]]]) -> list[str]:
        payload = json.dumps([{"template": t, "messages": m} for t, m in cases])
        out = subprocess.run(
            [str(binary)], input=payload, capture_output=True, text=True, check=True
        )
        return list(json.loads(out.stdout))

    return render
