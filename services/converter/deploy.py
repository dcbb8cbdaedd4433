"""`tunestack llm deploy RUN`: hand an exported GGUF to a server, prove it answers, switch
the RAG API to it, record it. One composition for the CLI and the API's deploy job.

Order matters for "the previous model keeps serving if deploy fails": the file is checked
against meta.json (size and sha256; a file from an interrupted export never matches), the
server gets and verifies the new model first (a `ServingTarget`), and only then is the RAG
API switched (a `RagSwitch`: over HTTP from the CLI, in-process from the API; the API
verifies again before it swaps its target). If recording the deployment fails after the
switch, the switch is undone, so the API never serves a model the registry does not know.

Ollama: the `ollama` Python client at OLLAMA_HOST uploads the GGUF as a blob (skipped when
HEAD /api/blobs/<digest> says the server has it), creates the model from the fields of the
Modelfile we wrote (template, system, stop parameters, messages, adapters), checks
/api/show, and runs one /api/generate. llama.cpp: the local stack restarts its server on
the file (platform_cli), behind the same ServingTarget interface.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from services.common.api_client import ApiUnreachable, RagClient
from services.common.api_schemas import LlmSwitch, LlmTargetInfo, SwitchResponse
from services.common.errors import BadInput, NotFound, ServiceUnavailable, TunestackError
from services.common.records import Deployment, ExportFile, LlmRecord
from services.common.registry import Entry, Registry, validate_name
from services.converter import modelfile as mf
from services.converter.toolchain import sha256_file

Say = Callable[[str], None]
VERIFY_PROMPT = "Say hello in one short sentence."


@dataclass
class DeployFile:
    quant: str
    path: Path
    sha256: str
    size: int
    record: ExportFile


@dataclass
class Installed:
    """What a server reports after taking the model: where it answers, and its answer."""

    to: str
    base_url: str  # OpenAI-compatible /v1 of the server that now serves the model
    response: str
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)


class ServingTarget(Protocol):
    """A server a model can be deployed to (Ollama, the local llama.cpp server)."""

    name: str

    def install(self, entry: Entry[LlmRecord], f: DeployFile, model: str, say: Say) -> Installed:
        """Make `model` served from `f` and prove it answers; leave the previous model
        serving if anything fails."""
        ...


class RagSwitch(Protocol):
    """How a deploy points the RAG API at the new model (and back, if recording fails)."""

    def switch(self, model: str, base_url: str, run: str) -> SwitchResponse | None:
        """The switch made, or None when there is no RAG API to switch."""
        ...

    def restore(self, previous: LlmTargetInfo) -> None: ...


@dataclass
class DeploySpec:
    run: str
    quant: str = "q8_0"
    model: str | None = None  # name on the server; default: the run's name
    by: str = "tunestack llm deploy"

    @property
    def model_name(self) -> str:
        return self.model or self.run


@dataclass
class DeployResult:
    run: str
    quant: str
    model: str
    installed: Installed
    switched: SwitchResponse | None
    deployment: Deployment


def validate_model_name(model: str) -> None:
    """A server-side model name (Ollama allows `name:tag` and `ns/name`)."""
    try:
        validate_name(model.replace(":", "-").replace("/", "-"))
    except TunestackError as e:
        raise BadInput(e.message, hint=e.hint) from e


# ---- the exported file ---------------------------------------------------------------------


def export_record(entry: Entry[LlmRecord], quant: str, *, allow_failed: bool = False) -> ExportFile:
    """meta.json's record of the `quant` export, if there is one and it passed its gates.

    Reads meta.json only (no hashing), so the RAG API can refuse a deploy at once.
    """
    export = entry.record.export
    files = export.files if export else {}
    if not files:
        raise NotFound(
            f"'{entry.name}' has not been exported.",
            hint=f"tunestack llm export {entry.name} --quant {quant}",
        )
    rec = files.get(quant)
    if rec is None:
        raise NotFound(
            f"'{entry.name}' has no {quant} export (exported: {', '.join(files)}).",
            hint=f"tunestack llm export {entry.name} --quant {quant}, or --quant "
            + next(iter(files)),
        )
    if not rec.ok and not allow_failed:
        raise BadInput(
            f"The {quant} export of '{entry.name}' failed its checks "
            f"({'; '.join(rec.problems())}); it is not deployed.",
            hint="Deploy a type that passed (see `tunestack models list`), or re-export.",
        )
    return rec


def exported_file(entry: Entry[LlmRecord], quant: str, *, allow_failed: bool = False) -> DeployFile:
    """The exported GGUF of `quant`, checked against meta.json and the parity gate."""
    rec = export_record(entry, quant, allow_failed=allow_failed)
    path = Path(rec.path)
    if not path.is_file() or path.stat().st_size != rec.size:
        raise TunestackError(
            f"The {quant} GGUF of '{entry.name}' is missing or does not match meta.json "
            "(an interrupted export?).",
            hint=f"Re-export: tunestack llm export {entry.name} --quant {quant}",
        )
    if sha256_file(path) != rec.sha256:
        raise TunestackError(
            f"The {quant} GGUF of '{entry.name}' does not match the sha256 recorded at export.",
            hint=f"Re-export: tunestack llm export {entry.name} --quant {quant}",
        )
    return DeployFile(quant, path, rec.sha256, rec.size, rec)


def modelfile_for(entry: Entry[LlmRecord], file_name: str) -> mf.Modelfile:
    """The run's Modelfile with FROM pointing at the chosen file."""
    path = entry.dir / "Modelfile"
    if not path.is_file():
        raise NotFound(
            f"The Modelfile of '{entry.name}' is missing.",
            hint=f"tunestack llm export {entry.name}",
        )
    fields = mf.parse(path.read_text(encoding="utf-8"))
    fields.from_ = f"./gguf/{file_name}"
    if fields.template is None:
        raise BadInput(
            f"The Modelfile of '{entry.name}' has no TEMPLATE (its chat template could not "
            "be translated for Ollama); Ollama would prompt it without turn markers and it "
            "would not stop.",
            hint="Add a TEMPLATE to the run's Modelfile by hand and deploy again, or "
            "--to llamacpp.",
        )
    return fields


def check_deployable(entry: Entry[LlmRecord], quant: str) -> None:
    """What can be refused at once, before a deploy is queued: no export of that type, a
    failed gate, no usable Modelfile."""
    rec = export_record(entry, quant)
    modelfile_for(entry, rec.file or Path(rec.path).name)


# ---- the composition --------------------------------------------------------------------


def deploy(
    registry: Registry,
    req: DeploySpec,
    target: ServingTarget,
    switch: RagSwitch | None,
    say: Say,
) -> DeployResult:
    """Check the file, install it on `target`, switch the RAG API, record; see the module
    docstring for why in this order and what is undone when."""
    entry = registry.llm(req.run)
    say(f"  Checking the {req.quant} export of {req.run} (size, sha256)...")
    f = exported_file(entry, req.quant.lower())
    installed = target.install(entry, f, req.model_name, say)
    switched = None
    if switch is not None:
        say(f"  Switching the RAG API to '{req.model_name}'...")
        switched = switch.switch(req.model_name, installed.base_url, req.run)
    deployment = Deployment(
        to=installed.to,
        name=req.model_name,
        base_url=installed.base_url,
        quant=f.quant,
        by=req.by,
        verify={"response": installed.response, "seconds": installed.seconds},
        rag_api=switched.model_dump() if switched else None,
        **installed.details,
    )
    try:
        record_deployment(registry, req.run, deployment)
    except Exception as e:
        if switched is not None and switch is not None:
            switch.restore(switched.previous)
        prev = f"; the RAG API went back to '{switched.previous.model}'" if switched else ""
        raise TunestackError(
            f"'{req.model_name}' is served by {installed.to}, but recording the deployment "
            f"failed ({type(e).__name__}: {e}){prev}.",
            hint="Check that TUNESTACK_HOME is writable, then deploy again "
            f"(tunestack llm deploy {req.run} --to {installed.to} --quant {f.quant} "
            f"--name {req.model_name}).",
        ) from e
    return DeployResult(req.run, f.quant, req.model_name, installed, switched, deployment)


def record_deployment(registry: Registry, run: str, deployment: Deployment) -> None:
    """Append to the run's `deployments` (the newest last, 20 kept), under its lock."""

    def add(record: LlmRecord) -> LlmRecord:
        record.deployments = [*record.deployments, deployment][-20:]
        return record

    registry.update("llm", run, add)


# ---- the RAG API over HTTP --------------------------------------------------------------


class ApiSwitch:
    """A RAG API reached over HTTP (the CLI's deploy): the shared client, no copy of it."""

    def __init__(self, client: RagClient) -> None:
        self.client = client

    def switch(self, model: str, base_url: str, run: str) -> SwitchResponse | None:
        try:
            return self.client.switch_llm(LlmSwitch(model=model, base_url=base_url, run=run))
        except ApiUnreachable:
            return None

    def restore(self, previous: LlmTargetInfo) -> None:
        self.client.switch_llm(
            LlmSwitch(model=previous.model, base_url=previous.base_url, verify=False)
        )


# ---- Ollama ---------------------------------------------------------------------------------


def _ollama_client(host: str) -> Any:
    import ollama  # optional extra: only a deploy to Ollama needs it

    return ollama.Client(host=host, timeout=600)


@contextlib.contextmanager
def ollama_errors(
    host: str, start_hint: str = "Start Ollama or set OLLAMA_HOST."
) -> Iterator[None]:
    """Ollama's refusals and its absence as our errors, for every call to it."""
    import ollama  # optional extra: only a deploy to Ollama needs it

    try:
        yield
    except ollama.ResponseError as e:
        raise TunestackError(
            f"Ollama at {host} refused: {e.error} (HTTP {e.status_code}).",
            hint="Check OLLAMA_HOST and the Ollama server log.",
        ) from e
    except (ConnectionError, httpx.HTTPError) as e:
        raise ServiceUnavailable(
            "ollama", f"Ollama is not reachable at {host} ({type(e).__name__}).", hint=start_hint
        ) from e


def _blob_exists(client: Any, digest: str) -> bool:
    """HEAD /api/blobs/<digest> (the client has no method for it; same connection)."""
    r = client._client.head(f"/api/blobs/{digest}")
    if r.status_code in (200, 404):
        return bool(r.status_code == 200)
    raise TunestackError(f"Ollama answered {r.status_code} to HEAD /api/blobs/{digest}.")


def push_blob(client: Any, path: Path, sha256: str, say: Say) -> str:
    digest = f"sha256:{sha256}"
    if _blob_exists(client, digest):
        say(f"  Ollama already has {path.name} ({digest[:19]}...)")
        return digest
    say(f"  Uploading {path.name} ({path.stat().st_size / 2**20:.0f} MB) to Ollama...")
    got = client.create_blob(path)
    if got != digest:
        raise TunestackError(f"Ollama stored {path.name} as {got}, expected {digest}.")
    return digest


class OllamaTarget:
    """Register the export with an Ollama server (blobs, create, show, one generate)."""

    name = "ollama"

    def __init__(self, host: str, *, adapter: bool = False) -> None:
        self.host = host
        self.adapter = adapter

    def install(self, entry: Entry[LlmRecord], f: DeployFile, model: str, say: Say) -> Installed:
        fields = modelfile_for(entry, f.path.name)
        client = _ollama_client(self.host)
        started = "Start Ollama (docker mode: tunestack up --llm ollama) or set OLLAMA_HOST."
        with ollama_errors(self.host, started):
            files, adapters = self._blobs(client, entry, f, say)
            say(f"  Creating Ollama model '{model}'...")
            client.create(
                model=model,
                files=files,
                adapters=adapters,
                template=fields.template,
                system=fields.system,
                parameters=fields.api_parameters() or None,
                messages=fields.messages or None,
                stream=False,
            )
            shown = client.show(model)
            if (shown.template or "") != fields.template:
                raise TunestackError(f"Ollama shows another TEMPLATE for '{model}' than we sent.")
            t0 = time.monotonic()
            r = client.generate(
                model=model, prompt=VERIFY_PROMPT, options={"num_predict": 48, "temperature": 0}
            )
            if not r.done or not (r.response or "").strip():
                raise TunestackError(f"Ollama's generate with '{model}' returned no text.")
        return Installed(
            to="ollama",
            base_url=self.host.rstrip("/") + "/v1",
            response=r.response,
            seconds=round(time.monotonic() - t0, 2),
            details={
                "host": self.host,
                "files": files,
                "adapters": adapters,
                "done_reason": getattr(r, "done_reason", None),
            },
        )

    def _blobs(
        self, client: Any, entry: Entry[LlmRecord], f: DeployFile, say: Say
    ) -> tuple[dict[str, str], dict[str, str] | None]:
        if not self.adapter:
            return {f.path.name: push_blob(client, f.path, f.sha256, say)}, None
        export = entry.record.export
        lora = export.lora_gguf if export else None
        amf = entry.dir / "Modelfile.adapter"
        if lora is None or not amf.is_file():
            raise NotFound(
                f"'{entry.name}' was exported without --lora-gguf.",
                hint=f"tunestack llm export {entry.name} --lora-gguf",
            )
        afields = mf.parse(amf.read_text(encoding="utf-8"))
        base = Path(afields.from_)
        files = {base.name: push_blob(client, base, sha256_file(base), say)}
        lora_path = Path(lora.path)
        return files, {lora_path.name: push_blob(client, lora_path, lora.sha256, say)}
