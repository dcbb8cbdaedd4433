"""Architecture rules that ruff, mypy and import-linter cannot express (run by `make check`).

Why each rule exists:
- environ: configuration is read in one place per service (its `settings.py`), so every
  knob is typed, documented and overridable in tests; a stray `os.environ` is a hidden knob.
- local-import: imports belong at module top so a module's dependencies are visible and
  import errors surface at start-up, not mid-request. Heavy optional third-party libraries
  may be imported lazily (start-up time, optional extras); anything else needs a comment
  saying why, on the import line or the line above it.
- layout: README.md's layout block is the newcomer's map; a package missing from it is
  code nobody will find.
- routes: route modules are thin HTTP adapters over the service layer; one importing
  another means service logic lives in a route (import-linter checks this too; this is
  the cheap version that also runs without it).

Stdlib only, AST-based: `python infra/checks/architecture.py [--root PATH]` prints each
violation as `path:line: [rule] message` and exits 1 when there is any.
"""

from __future__ import annotations

import argparse
import ast
import io
import re
import sys
import tokenize
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SCANNED = ("platform_cli", "services")
ROUTES = ("services", "rag_api", "routes")
SETTINGS_FILE = "settings.py"
# Imported lazily for start-up time or because they belong to an optional extra.
HEAVY = frozenset(
    {
        *("torch", "transformers", "sentence_transformers", "peft", "datasets", "accelerate"),
        *("safetensors", "bitsandbytes", "trl", "flash_attn", "huggingface_hub", "gguf"),
        *("chromadb", "llama_cpp", "llama_index", "ollama", "openai", "tensorboard"),
        *("langchain", "langchain_core", "langchain_openai", "pymilvus"),
        *("fastapi", "uvicorn", "streamlit", "docker", "selenium", "dotenv"),
        *("bm25s", "jieba", "nltk", "rouge_chinese", "pypdf", "bs4", "charset_normalizer"),
        *("matplotlib", "numpy", "pandas", "PIL"),
    }
)
# Linter directives are comments, but they do not say why an import is local.
DIRECTIVE = re.compile(r"(noqa|type:|pragma|pyright:|mypy:|fmt:)", re.IGNORECASE)
# A directory named in a layout line: `name/` or `a/b/`, not part of a longer path or URL.
DIR_TOKEN = re.compile(r"(?<![\w./:-])((?:[A-Za-z_][\w.-]*/)+)(?=[\s,;:)`]|$)")


@dataclass(frozen=True, order=True)
class Violation:
    path: str
    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: [{self.rule}] {self.message}"


def python_files(root: Path) -> list[Path]:
    """Every .py file under the scanned packages, in a stable order."""
    files: list[Path] = []
    for top in SCANNED:
        files += [p for p in (root / top).rglob("*.py") if "__pycache__" not in p.parts]
    return sorted(files)


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


# ---- environ --------------------------------------------------------------------------


def environ_use(node: ast.AST) -> str | None:
    """What environment access `node` is, if any."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        if node.value.id == "os" and node.attr in ("environ", "getenv", "putenv"):
            return f"os.{node.attr}"
        if node.value.id == "environ" and node.attr == "get":
            return "environ.get"
    if isinstance(node, ast.ImportFrom) and node.module == "os":
        names = [a.name for a in node.names if a.name in ("environ", "getenv")]
        return f"from os import {', '.join(names)}" if names else None
    return None


def check_environ(tree: ast.AST, rel: str) -> Iterator[Violation]:
    """`os.environ`, `os.getenv`, `environ.get` and `from os import environ|getenv`."""
    if Path(rel).name == SETTINGS_FILE:
        return
    for node in ast.walk(tree):
        found = environ_use(node)
        if found and isinstance(node, ast.expr | ast.stmt):
            yield Violation(
                rel,
                node.lineno,
                "environ",
                f"{found} outside settings.py: read it in a settings class "
                "(child env: services.common.settings.process_environ)",
            )


# ---- imports inside functions ---------------------------------------------------------


def explains(comment: str) -> bool:
    """`# circular: ...` explains; `# noqa: PLC0415` alone does not (`# noqa: X  # why` does)."""
    return any(part.strip() and not DIRECTIVE.match(part.strip()) for part in comment.split("#"))


def explained_lines(source: str) -> set[int]:
    """Lines carrying a `#` comment that says something besides linter directives."""
    lines: set[int] = set()
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT and explains(tok.string):
                lines.add(tok.start[0])
    except (tokenize.TokenError, SyntaxError):
        pass
    return lines


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def function_imports(
    node: ast.AST, in_function: bool = False
) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports whose enclosing scope is a function, skipping `if TYPE_CHECKING:` bodies."""
    if isinstance(node, ast.Import | ast.ImportFrom):
        if in_function:
            yield node
        return
    if isinstance(node, ast.If) and is_type_checking(node.test):
        children: list[ast.AST] = list(node.orelse)
    else:
        children = list(ast.iter_child_nodes(node))
    inner = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    for child in children:
        yield from function_imports(child, inner)


def imported_modules(node: ast.Import | ast.ImportFrom) -> list[str]:
    """Module names an import statement loads, as written (`.x` for a relative import)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    return ["." * node.level + (node.module or "")]


def check_local_imports(tree: ast.AST, source: str, rel: str) -> Iterator[Violation]:
    """Unexplained imports of light modules inside functions."""
    explained = explained_lines(source)
    for node in function_imports(tree):
        lines = set(range(node.lineno - 1, (node.end_lineno or node.lineno) + 1))
        if lines & explained:
            continue
        light = [m for m in imported_modules(node) if m.split(".")[0] not in HEAVY]
        if light:
            yield Violation(
                rel,
                node.lineno,
                "local-import",
                f"import of {', '.join(light)} inside a function: move it to the module top "
                "or say why in a comment on that line (# circular: ..., # optional extra: ...)",
            )


# ---- routes ---------------------------------------------------------------------------


def resolve_imports(node: ast.Import | ast.ImportFrom, package: str) -> list[str]:
    """Absolute names an import may load: the module and, for `from`, module.name."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = package.split(".")
        anchor = anchor[: len(anchor) - node.level + 1]
        base = ".".join([*anchor, base] if base else anchor)
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def check_routes(tree: ast.AST, root: Path, path: Path, rel: str) -> Iterator[Violation]:
    """A module in services/rag_api/routes/ importing a sibling route module."""
    routes_dir = root.joinpath(*ROUTES)
    if path.parent != routes_dir or path.name == "__init__.py":
        return
    prefix = ".".join(ROUTES) + "."
    own = module_name(root, path)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        for name in resolve_imports(node, ".".join(ROUTES)):
            tail = name.removeprefix(prefix).split(".")[0]
            if not name.startswith(prefix) or prefix + tail == own:
                continue
            if (routes_dir / f"{tail}.py").exists() or (routes_dir / tail).is_dir():
                yield Violation(
                    rel,
                    node.lineno,
                    "routes",
                    f"route module imports route module {prefix}{tail}: "
                    "move the shared code into the service layer",
                )


# ---- README layout --------------------------------------------------------------------


def layout_block(readme: str) -> tuple[int, list[str]] | None:
    """The first fenced block after a heading containing 'layout': (first line no, lines)."""
    lines = readme.splitlines()
    in_section = False
    for i, line in enumerate(lines):
        if line.startswith("#"):
            in_section = "layout" in line.lower()
        elif in_section and line.strip().startswith("```"):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
            return (i + 2, lines[i + 1 : end]) if end is not None else None
    return None


def layout_paths(block: list[str]) -> set[str]:
    """Directories a layout block names, as `a/b` paths, with all their ancestors.

    Both styles are understood: flat lines (`services/common/  what it is`) and an indented
    tree (`services/` then `  common/`). Folders named in an entry's description
    (`platform_cli/  the CLI; stack/ (local, compose)`) count as children of that entry.
    """
    named: set[str] = set()
    stack: list[tuple[int, str]] = []
    for line in block:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        first, _, rest = line.strip().partition(" ")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if not first.endswith("/"):
            continue
        path = (stack[-1][1] if stack else "") + first
        stack.append((indent, path))
        named.add(path)
        named.update(path + sub for sub in DIR_TOKEN.findall(rest))
    with_parents: set[str] = set()
    for path in named:
        parts = path.strip("/").split("/")
        with_parents.update("/".join(parts[:n]) for n in range(1, len(parts) + 1))
    return with_parents


def check_layout(root: Path) -> Iterator[Violation]:
    readme = root / "README.md"
    block = layout_block(readme.read_text(encoding="utf-8")) if readme.exists() else None
    if block is None:
        yield Violation("README.md", 1, "layout", "no fenced code block under a layout heading")
        return
    first_line, lines = block
    named = layout_paths(lines)
    for top in SCANNED:
        for init in sorted((root / top).rglob("__init__.py")):
            package = init.parent.relative_to(root).as_posix()
            if "__pycache__" not in package and package not in named:
                yield Violation(
                    "README.md",
                    first_line,
                    "layout",
                    f"package {package}/ is missing from the layout block: add a line for it",
                )


# ---- main -----------------------------------------------------------------------------


def check_file(root: Path, path: Path) -> list[Violation]:
    rel = path.relative_to(root).as_posix()
    source = path.read_text(encoding="utf-8")
    try:
        tree = ast.parse(source, filename=rel)
    except SyntaxError as exc:
        return [Violation(rel, exc.lineno or 1, "syntax", str(exc.msg))]
    return [
        *check_environ(tree, rel),
        *check_local_imports(tree, source, rel),
        *check_routes(tree, root, path, rel),
    ]


def run(root: Path) -> tuple[list[Violation], int]:
    files = python_files(root)
    violations = [v for path in files for v in check_file(root, path)]
    violations += check_layout(root)
    return sorted(set(violations)), len(files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_root = Path(__file__).resolve().parents[2]
    parser.add_argument("--root", type=Path, default=default_root, help="project root")
    args = parser.parse_args(argv)
    violations, n_files = run(args.root.resolve())
    for violation in violations:
        print(violation)
    counts = Counter(v.rule for v in violations)
    rules = ("environ", "local-import", "routes", "layout", "syntax")
    summary = ", ".join(f"{rule} {counts[rule]}" for rule in rules)
    print(f"architecture: {n_files} files checked; {len(violations)} violations ({summary})")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
