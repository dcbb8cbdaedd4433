"""The architecture checks of `make check` pass on this tree, and each one fails on a tree
built to break it (a check that could not fail would prove nothing).

Covers infra/checks/architecture.py, infra/checks/cli_docs.py and the import-linter
contracts in pyproject.toml, each run as `make check` runs it: as a subprocess.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECKS = ROOT / "infra" / "checks"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
CONTRACT_IDS = ("layers", "ui", "common", "routes", "acyclic")


def run(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def script(name: str, *args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return run(sys.executable, CHECKS / name, *args, cwd=cwd)


def lint_imports(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    assert LINT_IMPORTS.exists(), "import-linter is missing: pip install -e '.[dev]'"
    return run(LINT_IMPORTS, "--no-logo", "--no-cache", *args, cwd=cwd)


def write_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")


def load_architecture() -> ModuleType:
    spec = importlib.util.spec_from_file_location("architecture", CHECKS / "architecture.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while decorating
    spec.loader.exec_module(module)
    return module


# ---- this tree passes ---------------------------------------------------------------


def test_tree_follows_architecture_rules() -> None:
    result = script("architecture.py")
    assert result.returncode == 0, result.stdout + result.stderr


def test_tree_keeps_import_contracts() -> None:
    result = lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_cli_reference_is_current() -> None:
    result = script("cli_docs.py", "--check")
    assert result.returncode == 0, result.stdout + result.stderr


# ---- architecture.py on a broken tree -----------------------------------------------

CLEAN_TREE = {
    "README.md": """
        # Fake

        ## Repository layout

        ```
        platform_cli/     the CLI; stack/ (local, compose)
        services/
          common/         shared code
          rag_api/        the API
            routes/       HTTP adapters
        ```
        """,
    "platform_cli/__init__.py": "",
    "platform_cli/stack/__init__.py": "",
    "services/__init__.py": "",
    "services/common/__init__.py": "",
    "services/common/settings.py": "import os\n\nHOME = os.environ.get('HOME')\n",
    "services/common/lazy.py": """
        from __future__ import annotations

        from typing import TYPE_CHECKING

        if TYPE_CHECKING:
            import json

        NOTE = "os.environ and os.getenv in a string are fine"


        def load() -> object:
            if TYPE_CHECKING:
                from services.common import settings
            import torch
            from transformers import AutoModel
            import json  # circular: services.common imports this module
            # optional extra: only the API needs it
            from services.common import settings
            from services.common import lazy  # noqa: F401  # circular: itself, for the demo
            return torch, AutoModel, json, settings
        """,
    "services/rag_api/__init__.py": "",
    "services/rag_api/context.py": "",
    "services/rag_api/routes/__init__.py": "from services.rag_api.routes import admin\n",
    "services/rag_api/routes/admin.py": "from services.rag_api import context\n",
    "services/rag_api/routes/documents.py": "from ..context import NAME\n",
}

BROKEN_FILES = {
    "services/common/config.py": """
        import os
        from os import environ, getenv

        A = os.environ.get("A")
        B = os.getenv("B")
        C = environ.get("C")
        """,
    "services/common/worker.py": """
        def work() -> None:
            import json
            from . import settings  # noqa: F401
            from services.common import (
                lazy,
            )
            return json, lazy
        """,
    "services/rag_api/routes/documents.py": """
        from services.rag_api.routes import admin
        from .admin import x
        import services.rag_api.routes.admin as routes_admin
        from services.rag_api.routes import NOT_A_MODULE
        """,
    "services/ui/__init__.py": "",
}

EXPECTED = {
    ("services/common/config.py", 2, "environ"),  # from os import environ, getenv
    ("services/common/config.py", 4, "environ"),  # os.environ
    ("services/common/config.py", 5, "environ"),  # os.getenv
    ("services/common/config.py", 6, "environ"),  # environ.get
    ("services/common/worker.py", 2, "local-import"),  # import json
    ("services/common/worker.py", 3, "local-import"),  # a noqa is no explanation
    ("services/common/worker.py", 4, "local-import"),  # multi-line, no comment
    ("services/rag_api/routes/documents.py", 1, "routes"),
    ("services/rag_api/routes/documents.py", 2, "routes"),
    ("services/rag_api/routes/documents.py", 3, "routes"),
    ("README.md", 6, "layout"),  # services/ui/
}


def violations(output: str) -> set[tuple[str, int, str]]:
    found = re.findall(r"^(\S+):(\d+): \[([\w-]+)\]", output, re.MULTILINE)
    return {(path, int(line), rule) for path, line, rule in found}


def test_architecture_accepts_allowed_patterns(tmp_path: Path) -> None:
    write_tree(tmp_path, CLEAN_TREE)
    result = script("architecture.py", "--root", tmp_path)
    assert result.returncode == 0, result.stdout
    assert "0 violations" in result.stdout


def test_architecture_reports_each_rule(tmp_path: Path) -> None:
    write_tree(tmp_path, CLEAN_TREE | BROKEN_FILES)
    result = script("architecture.py", "--root", tmp_path)
    assert result.returncode == 1
    assert violations(result.stdout) == EXPECTED, result.stdout
    assert "package services/ui/ is missing from the layout block" in result.stdout
    assert "11 violations (environ 4, local-import 3, routes 3, layout 1" in result.stdout


def test_architecture_needs_a_layout_block(tmp_path: Path) -> None:
    write_tree(tmp_path, CLEAN_TREE | {"README.md": "# Fake\n\nNo layout here.\n"})
    result = script("architecture.py", "--root", tmp_path)
    assert result.returncode == 1
    assert violations(result.stdout) == {("README.md", 1, "layout")}


def test_layout_block_styles() -> None:
    """Flat paths and an indented tree both name their folders and the folders' parents."""
    arch = load_architecture()
    tree = ["Makefile   targets", "services/", "  common/   shared; documents/ (load)", "  ui/"]
    flat = ["platform_cli/   the CLI", "services/rag_api/ the API", "tests/  unit/ and e2e/"]
    assert arch.layout_paths(tree) == {
        "services",
        "services/common",
        "services/common/documents",
        "services/ui",
    }
    assert arch.layout_paths(flat) == {
        "platform_cli",
        "services",
        "services/rag_api",
        "tests",
        "tests/unit",
        "tests/e2e",
    }


# ---- cli_docs.py on a fake CLI ------------------------------------------------------

FAKE_CLI = '''
    import typer

    app = typer.Typer(help="A fake CLI.")
    group = typer.Typer(help="A group of commands.")
    app.add_typer(group, name="group")


    @app.command()
    def hello(name: str, loud: bool = typer.Option(False, help="Shout it.")) -> None:
        """Say hello. Then more text that the summary leaves out."""


    @group.command()
    def bye(count: int = typer.Option(2, "--count", "-n", help="How many | times.")) -> None:
        """Say bye."""
    '''
README = "# Fake\n\nProse before.\n\n## CLI\n\n{block}\nProse after.\n"
MARKERS = "<!-- cli-reference:begin -->\n<!-- cli-reference:end -->\n"


def cli_docs(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return script("cli_docs.py", "--root", root, "--app", "fake_cli:app", "--prog", "fake", *args)


def test_cli_docs_needs_markers(tmp_path: Path) -> None:
    write_tree(tmp_path, {"fake_cli.py": FAKE_CLI, "README.md": README.format(block="")})
    before = (tmp_path / "README.md").read_text()
    for mode in ("--check", "--write"):
        result = cli_docs(tmp_path, mode)
        assert result.returncode == 1
        assert "cli-reference:begin" in result.stderr
    assert (tmp_path / "README.md").read_text() == before


def test_cli_docs_write_then_check(tmp_path: Path) -> None:
    write_tree(tmp_path, {"fake_cli.py": FAKE_CLI, "README.md": README.format(block=MARKERS)})
    readme = tmp_path / "README.md"

    stale = cli_docs(tmp_path, "--check")
    assert stale.returncode == 1
    assert "+| `fake hello [OPTIONS] NAME` | Say hello. |" in stale.stdout
    assert "make docs" in stale.stderr

    assert cli_docs(tmp_path, "--write").returncode == 0
    text = readme.read_text()
    assert text.startswith("# Fake\n\nProse before.") and text.endswith("\nProse after.\n")
    for line in (
        "| `fake [OPTIONS] COMMAND [ARGS]...` | A fake CLI. |",
        "| `fake group bye [OPTIONS]` | Say bye. |",
        "#### `fake hello`",
        "| `--loud / --no-loud` | Shout it. [default: no-loud] |",
        "| `-n, --count <int>` | How many \\| times. [default: 2] |",
    ):
        assert line in text
    assert cli_docs(tmp_path, "--check").returncode == 0

    # the CLI changes, the README does not: --check catches the drift
    (tmp_path / "fake_cli.py").write_text(
        (tmp_path / "fake_cli.py").read_text().replace("Say bye.", "Say goodbye.")
    )
    drift = cli_docs(tmp_path, "--check")
    assert drift.returncode == 1
    assert "-| `fake group bye [OPTIONS]` | Say bye. |" in drift.stdout
    assert "+| `fake group bye [OPTIONS]` | Say goodbye. |" in drift.stdout


# ---- import-linter contracts on a broken tree ---------------------------------------


def importlinter_config() -> str:
    """pyproject.toml's [tool.importlinter] tables, verbatim: the contracts under test."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    start = text.index("\n[tool.importlinter]\n") + 1
    end = text.index("\n[tool.", start)
    section = text[start:end]
    parsed = tomllib.loads(section)["tool"]["importlinter"]
    assert parsed == tomllib.loads(text)["tool"]["importlinter"]
    assert {c["id"] for c in parsed["contracts"]} == set(CONTRACT_IDS)
    return section


PACKAGES = [
    "platform_cli",
    "services",
    *(
        f"services/{name}"
        for name in (
            "common",
            "trainer",
            "embed_tuner",
            "converter",
            "rag_api",
            "rag_api/routes",
            "llm_server",
            "ui",
        )
    ),
]
LEGAL_IMPORTS = {
    "platform_cli/main.py": "import services.rag_api.app\nimport services.llm_server\n",
    "services/rag_api/app.py": "import services.converter.export\nimport services.rag_api.store\n",
    "services/rag_api/store.py": "import services.common.api\n",
    "services/rag_api/routes/a.py": "import services.rag_api.store\n",
    "services/rag_api/routes/b.py": "import services.common.api\n",
    "services/converter/export.py": "import services.trainer.train\nimport services.embed_tuner\n",
    "services/trainer/train.py": "import torch\nimport services.common.api\n",
    "services/common/api.py": "import httpx\n",
    "services/ui/app.py": "import services.common.api\nimport httpx\n",
}
BROKEN_IMPORTS = {
    "layers": {"services/trainer/bad.py": "import services.converter.export\n"},
    "ui": {"services/ui/bad.py": "import numpy\n"},
    "common": {"services/common/bad.py": "import services.ui.app\n"},
    "routes": {"services/rag_api/routes/bad.py": "import services.rag_api.routes.a\n"},
    "acyclic": {"services/rag_api/cycle.py": "import services.rag_api.app\n"},
}
BROKEN_IMPORTS["acyclic"]["services/rag_api/store.py"] = "import services.rag_api.cycle\n"


def contract_tree(root: Path, extra: dict[str, str]) -> Path:
    inits = {f"{pkg}/__init__.py": "" for pkg in PACKAGES}
    write_tree(root, inits | LEGAL_IMPORTS | extra)
    config = root / "importlinter.toml"
    config.write_text(importlinter_config(), encoding="utf-8")
    return config


def test_import_contracts_hold_on_legal_tree(tmp_path: Path) -> None:
    config = contract_tree(tmp_path, {})
    result = lint_imports(config, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(CONTRACT_IDS)} kept, 0 broken" in result.stdout


@pytest.mark.parametrize("contract", CONTRACT_IDS)
def test_import_contract_breaks(tmp_path: Path, contract: str) -> None:
    config = contract_tree(tmp_path, BROKEN_IMPORTS[contract])
    result = lint_imports(config, "--contract", contract, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "0 kept, 1 broken" in result.stdout, result.stdout + result.stderr
