"""Find the docker compose command (v2 plugin or v1 `docker-compose`) and build its argv.

Both are in use: Docker Desktop and Docker's own packages ship the v2 plugin
(`docker compose`), while distribution packages (Debian's docker-compose, CI images)
often still ship v1. Everything we need exists in both from v1.28 on (profiles,
`--env-file`, healthy/completed conditions), so we only use flags common to both and
refuse older v1 releases with a message instead of a cryptic schema error.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.errors import TunestackError

V1_MINIMUM = (1, 28)

# (argv prefix, what it is called in messages)
CANDIDATES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("docker", "compose"), "docker compose (v2 plugin)"),
    (("docker-compose",), "docker-compose"),
)

INSTALL_HINT = (
    "Install Docker Desktop (it includes compose), or on Linux Docker's compose plugin "
    "(apt-get install docker-compose-plugin from Docker's repository) or docker-compose "
    ">= 1.28 (apt-get install docker-compose). Or run without Docker: --mode local."
)


def parse_version(text: str) -> tuple[int, ...]:
    """'v2.29.1', '1.29.2', 'docker-compose version 1.29.2, build x' -> (2, 29, 1)..."""
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not m:
        return ()
    return tuple(int(g) for g in m.groups() if g is not None)


@dataclass(frozen=True)
class ComposeCommand:
    argv: tuple[str, ...]
    version: tuple[int, ...]
    label: str

    @property
    def is_v2(self) -> bool:
        return bool(self.version) and self.version[0] >= 2

    def args(
        self,
        *,
        project: str,
        files: Sequence[Path],
        env_file: Path | None = None,
        profiles: Sequence[str] = (),
    ) -> list[str]:
        """Global options (accepted by v1 and v2 alike), to be followed by a subcommand."""
        out = [*self.argv, "--project-name", project]
        for f in files:
            out += ["--file", str(f)]
        if env_file is not None:
            out += ["--env-file", str(env_file)]
        for p in profiles:
            out += ["--profile", p]
        return out


Runner = Callable[..., Any]


def detect_compose(
    which: Callable[[str], str | None] = shutil.which, run: Runner = subprocess.run
) -> ComposeCommand:
    """The first compose that answers `version`: the v2 plugin first, then v1."""
    too_old: list[str] = []
    for argv, label in CANDIDATES:
        if which(argv[0]) is None:
            continue
        try:
            r = run([*argv, "version", "--short"], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode != 0:
            continue
        version = parse_version(r.stdout)
        if not version:
            continue
        if version[0] < 2 and version[:2] < V1_MINIMUM:
            too_old.append(f"{label} {'.'.join(map(str, version))}")
            continue
        return ComposeCommand(argv, version, label)
    if too_old:
        raise TunestackError(
            f"Found {', '.join(too_old)}, which is too old: compose profiles need v1.28+.",
            hint=INSTALL_HINT,
        )
    raise TunestackError(
        "Docker Compose is not installed: neither the v2 plugin (`docker compose`) nor v1 "
        "`docker-compose` answered.",
        hint=INSTALL_HINT,
    )
