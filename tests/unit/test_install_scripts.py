"""infra/: the desktop installers and CI scripts are lint-clean, the bash installer's
--dry-run changes nothing, and the PowerShell installer parses.

PowerShell itself cannot be installed here (only Debian, PyPI and npm registries are
reachable, and Microsoft's pwsh packages live elsewhere), so install.ps1 is parsed with
the tree-sitter PowerShell grammar from PyPI: syntax only, not behaviour.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import unavailable

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = [
    ROOT / "infra/desktop/install.sh",
    ROOT / "infra/ci/base_image.sh",
    ROOT / "infra/ci/wheelhouse.sh",
    ROOT / "infra/ci/compose_e2e.sh",
    ROOT / ".ci/run",
    ROOT / "bench/rag_finetune_xquad.sh",
]


def test_shellcheck_clean() -> None:
    exe = shutil.which("shellcheck")
    if exe is None:
        unavailable("shellcheck is not installed (.ci/run installs it)")
    r = subprocess.run([exe, *map(str, SCRIPTS)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """A copy of the files install.sh reads, so a run cannot touch this checkout."""
    for rel in ("infra/desktop/install.sh", "compose/.env.example", "compose/compose.yml"):
        dest = tmp_path / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest)
    return tmp_path


def run_install(sandbox: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TUNESTACK_", "COMPOSE_"))}
    return subprocess.run(
        ["bash", str(sandbox / "infra/desktop/install.sh"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_install_dry_run_prints_the_plan_and_changes_nothing(sandbox: Path) -> None:
    before = sorted(p.relative_to(sandbox) for p in sandbox.rglob("*"))
    r = run_install(sandbox, "--dry-run", "--llm", "llamacpp", "--no-gpu")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    # the RAM and disk lines are printed whether this machine passes them or not (CI's
    # disk can be under the 20 GB the check asks for once the compose images are built)
    assert "Checking this machine" in out
    assert re.search(r"^  \[(ok|note|problem)\] +RAM \d+ GB", out, re.M), out
    assert re.search(r"^  \[(ok|problem)\] +disk", out, re.M), out
    assert "would run: cp compose/.env.example .env" in out
    assert "would add TUNESTACK_LLM_SERVER=llamacpp" in out
    assert "would run:" in out and "up --mode docker --llm llamacpp" in out
    assert "dry run: nothing was changed" in out
    assert sorted(p.relative_to(sandbox) for p in sandbox.rglob("*")) == before


def test_install_is_idempotent_about_an_existing_env(sandbox: Path) -> None:
    env = sandbox / ".env"
    env.write_text("TUNESTACK_LLM_SERVER=llamacpp\nTUNESTACK_UI_PORT=9999\n")
    r = run_install(sandbox, "--dry-run")
    assert r.returncode == 0, r.stdout + r.stderr
    assert ".env exists (kept)" in r.stdout and "would add TUNESTACK_LLM_SERVER" not in r.stdout
    assert "--llm llamacpp" in r.stdout and "http://127.0.0.1:9999" in r.stdout
    assert env.read_text() == "TUNESTACK_LLM_SERVER=llamacpp\nTUNESTACK_UI_PORT=9999\n"


def test_install_rejects_bad_options(sandbox: Path) -> None:
    assert run_install(sandbox, "--llm", "vllm").returncode == 2
    assert run_install(sandbox, "--frobnicate").returncode == 2
    r = run_install(sandbox, "--help")
    assert r.returncode == 0 and "--dry-run" in r.stdout


def _powershell_parser():  # type: ignore[no-untyped-def]
    try:
        import tree_sitter
        import tree_sitter_powershell
    except ImportError:
        unavailable("tree-sitter-powershell is not installed (infra/ci/test_tools.sh installs it)")
    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))


def test_install_ps1_parses() -> None:
    parser = _powershell_parser()
    src = (ROOT / "infra/desktop/install.ps1").read_bytes()
    tree = parser.parse(src)
    errors = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            errors.append((node.start_point[0] + 1, src[node.start_byte : node.end_byte][:60]))
        stack.extend(node.children)
    assert not errors, f"install.ps1 does not parse at (line, text): {errors}"
    # the check can fail: a broken copy does not parse
    assert parser.parse(src.replace(b"if ($DryRun) {", b"if ($DryRun {", 1)).root_node.has_error
    for flag in (b"[switch]$DryRun", b"wsl.exe", b"docker compose", b"nvidia-smi"):
        assert flag in src
