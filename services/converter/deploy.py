"""`tunestack llm deploy RUN`: hand an exported GGUF to a server, prove it answers, then
switch the RAG API to it.

Order matters for "the previous model keeps serving if deploy fails": the file is checked
against meta.json (size and sha256; a file from an interrupted export never matches), the
server gets and verifies the new model first, and only then is the RAG API switched (its
admin endpoint verifies again before it swaps LlmHolder's target). Any failure before the
switch leaves the API on its old model.

Ollama: the `ollama` Python client at OLLAMA_HOST uploads the GGUF as a blob (skipped when
HEAD /api/blobs/<digest> says the server has it), creates the model from the fields of the
Modelfile we wrote (template, system, stop parameters, messages, adapters), checks
/api/show, and runs one /api/generate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from services.common.errors import BadInput, NotFound, ServiceUnavailable, TunestackError
from services.common.registry import Entry, Registry
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
    record: dict[str, Any]


def export_record(entry: Entry, quant: str, *, allow_failed: bool = False) -> dict[str, Any]:
    """meta.json's record of the `quant` export, if there is one and it passed its gate.

    Reads meta.json only (no hashing), so the RAG API can refuse a deploy at once.
    """
    files = (entry.meta.get("export") or {}).get("files") or {}
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
    if not rec.get("ok") and not allow_failed:
        raise BadInput(
            f"The {quant} export of '{entry.name}' failed its checks "
            f"(parity {rec['parity']['top1_agreement']:.1%}, threshold "
            f"{rec['parity']['threshold']:.0%}; stopped {rec['stop_check']['stopped']}/"
            f"{rec['stop_check']['prompts']}); it is not deployed.",
            hint="Deploy a type that passed (see `tunestack models list`), or re-export.",
        )
    return dict(rec)


def exported_file(entry: Entry, quant: str, *, allow_failed: bool = False) -> DeployFile:
    """The exported GGUF of `quant`, checked against meta.json and the parity gate."""
    rec = export_record(entry, quant, allow_failed=allow_failed)
    path = Path(rec["path"])
    if not path.is_file() or path.stat().st_size != rec["size"]:
        raise TunestackError(
            f"{path} is missing or does not match meta.json (an interrupted export?).",
            hint=f"Re-export: tunestack llm export {entry.name} --quant {quant}",
        )
    if sha256_file(path) != rec["sha256"]:
        raise TunestackError(
            f"{path} does not match the sha256 recorded at export.",
            hint=f"Re-export: tunestack llm export {entry.name} --quant {quant}",
        )
    return DeployFile(quant, path, rec["sha256"], int(rec["size"]), rec)


def modelfile_for(entry: Entry, f: DeployFile) -> mf.Modelfile:
    """The run's Modelfile with FROM pointing at the chosen file."""
    path = entry.dir / "Modelfile"
    if not path.is_file():
        raise NotFound(f"{path} is missing.", hint=f"tunestack llm export {entry.name}")
    fields = mf.parse(path.read_text(encoding="utf-8"))
    fields.from_ = f"./gguf/{f.path.name}"
    if fields.template is None:
        raise BadInput(
            f"The Modelfile of '{entry.name}' has no TEMPLATE (its chat template could not "
            "be translated for Ollama); Ollama would prompt it without turn markers and it "
            "would not stop.",
            hint=f"Add a TEMPLATE to {path} by hand and deploy again, or --to llamacpp.",
        )
    return fields


# ---- Ollama ---------------------------------------------------------------------------


def _ollama_client(host: str) -> Any:
    import ollama

    return ollama.Client(host=host, timeout=600)


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


def deploy_ollama(
    registry: Registry,
    entry: Entry,
    name: str,
    f: DeployFile,
    host: str,
    say: Say,
    *,
    adapter: bool = False,
) -> dict[str, Any]:
    import ollama

    fields = modelfile_for(entry, f)
    client = _ollama_client(host)
    try:
        files: dict[str, str] = {}
        adapters: dict[str, str] | None = None
        if adapter:
            lora = (entry.meta.get("export") or {}).get("lora_gguf")
            amf = entry.dir / "Modelfile.adapter"
            if not lora or not amf.is_file():
                raise NotFound(
                    f"'{entry.name}' was exported without --lora-gguf.",
                    hint=f"tunestack llm export {entry.name} --lora-gguf",
                )
            afields = mf.parse(amf.read_text(encoding="utf-8"))
            base = Path(afields.from_)
            files[base.name] = push_blob(client, base, sha256_file(base), say)
            lora_path = Path(lora["path"])
            adapters = {lora_path.name: push_blob(client, lora_path, lora["sha256"], say)}
        else:
            files[f.path.name] = push_blob(client, f.path, f.sha256, say)
        say(f"  Creating Ollama model '{name}'...")
        client.create(
            model=name,
            files=files,
            adapters=adapters,
            template=fields.template,
            system=fields.system,
            parameters=fields.api_parameters() or None,
            messages=fields.messages or None,
            stream=False,
        )
        shown = client.show(name)
        if (shown.template or "") != fields.template:
            raise TunestackError(f"Ollama shows another TEMPLATE for '{name}' than we sent.")
        t0 = time.monotonic()
        r = client.generate(
            model=name, prompt=VERIFY_PROMPT, options={"num_predict": 48, "temperature": 0}
        )
        if not r.done or not (r.response or "").strip():
            raise TunestackError(f"Ollama's generate with '{name}' returned no text.")
    except ollama.ResponseError as e:
        raise TunestackError(
            f"Ollama at {host} refused: {e.error} (HTTP {e.status_code}).",
            hint="Check OLLAMA_HOST and the Ollama server log.",
        ) from e
    except (ConnectionError, httpx.HTTPError) as e:
        raise ServiceUnavailable(
            "ollama",
            f"Ollama is not reachable at {host} ({type(e).__name__}).",
            hint="Start Ollama (docker mode: tunestack up --llm ollama) or set OLLAMA_HOST.",
        ) from e
    return {
        "to": "ollama",
        "host": host,
        "name": name,
        "files": files,
        "adapters": adapters,
        "verify": {
            "response": r.response,
            "done_reason": getattr(r, "done_reason", None),
            "seconds": round(time.monotonic() - t0, 2),
        },
        "base_url": host.rstrip("/") + "/v1",
    }


# ---- the RAG API switch ---------------------------------------------------------------


def switch_rag_api(
    api_url: str, api_key: str | None, base_url: str, model: str, run: str
) -> dict[str, Any] | None:
    """Point a running RAG API at the deployed model; None when no API is running."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        r = httpx.post(
            f"{api_url.rstrip('/')}/v1/admin/llm",
            json={"model": model, "base_url": base_url, "run": run},
            headers=headers,
            timeout=120,
        )
    except httpx.ConnectError:
        return None
    except httpx.HTTPError as e:
        raise ServiceUnavailable("rag-api", f"The RAG API at {api_url} failed: {e}") from e
    if r.status_code >= 400:
        try:
            body = r.json()
        except ValueError:
            body = {"message": r.text}
        raise TunestackError(
            f"The RAG API kept its current model: {body.get('message', body)}",
            hint=body.get("hint"),
        )
    data: dict[str, Any] = r.json()
    return data


def record_deployment(registry: Registry, run: str, info: dict[str, Any]) -> None:
    """Append to the run's meta.json `deployments` (the newest last)."""
    entry = registry.get("llm", run)
    deployments = list(entry.meta.get("deployments") or [])
    deployments.append({**info, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    registry.write("llm", run, {**entry.meta, "deployments": deployments[-20:]}, replace=True)
