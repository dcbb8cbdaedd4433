"""Write (and read back) an Ollama Modelfile: FROM, TEMPLATE, PARAMETER stop, SYSTEM,
MESSAGE and ADAPTER.

`tunestack llm deploy --to ollama` sends Ollama the fields of the Modelfile we wrote, parsed
back from the file, so the file a user can `ollama create -f` and what we register can
never drift apart.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import TunestackError


@dataclass
class Modelfile:
    from_: str
    template: str | None = None
    system: str | None = None
    parameters: dict[str, list[Any]] = field(default_factory=dict)
    messages: list[dict[str, str]] = field(default_factory=list)
    adapters: list[str] = field(default_factory=list)

    @property
    def stops(self) -> list[str]:
        return [str(s) for s in self.parameters.get("stop", [])]

    def api_parameters(self) -> dict[str, Any]:
        """/api/create's `parameters`: repeated keys (stop) as lists, others as scalars."""
        return {k: (v if k == "stop" else v[-1]) for k, v in self.parameters.items()}


def _quote(text: str) -> str:
    if '"""' in text:
        raise TunestackError(
            'A Modelfile value cannot contain """ (it ends the quoted block).',
            hint="Remove the triple quotes from the system prompt or example messages.",
        )
    return f'"""{text}"""'


def render(mf: Modelfile, header: str = "") -> str:
    lines = [f"# {line}" for line in header.splitlines()] if header else []
    lines.append(f"FROM {mf.from_}")
    lines += [f"ADAPTER {a}" for a in mf.adapters]
    if mf.template is not None:
        lines.append(f"TEMPLATE {_quote(mf.template)}")
    for key, values in mf.parameters.items():
        for v in values:
            lines.append(f"PARAMETER {key} {json.dumps(v) if isinstance(v, str) else v}")
    if mf.system:
        lines.append(f"SYSTEM {_quote(mf.system)}")
    for m in mf.messages:
        lines.append(f"MESSAGE {m['role']} {_quote(m['content'])}")
    return "\n".join(lines) + "\n"


def parse(text: str) -> Modelfile:
    """Read the subset of Modelfile syntax `render` writes (and hand edits in that style)."""
    fields: dict[str, Any] = {"parameters": {}, "messages": [], "adapters": []}
    i = 0
    n = len(text)
    while i < n:
        j = text.find("\n", i)
        line = text[i : n if j < 0 else j]
        i = n if j < 0 else j + 1
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        cmd, _, arg = stripped.partition(" ")
        cmd = cmd.upper()
        arg = arg.strip()
        if cmd == "MESSAGE":
            role, _, arg = arg.partition(" ")
        if arg.startswith('"""'):
            body = arg[3:]
            end = body.find('"""')
            if end < 0:  # the value spans lines
                rest_end = text.find('"""', i)
                if rest_end < 0:
                    raise TunestackError(f'Unterminated """ after {cmd} in the Modelfile.')
                body = body + "\n" + text[i:rest_end]
                i = rest_end + 3
                nl = text.find("\n", i)
                i = n if nl < 0 else nl + 1
                value = body
            else:
                value = body[:end]
        else:
            value = arg
        if cmd == "FROM":
            fields["from_"] = value
        elif cmd == "ADAPTER":
            fields["adapters"].append(value)
        elif cmd == "TEMPLATE":
            fields["template"] = value
        elif cmd == "SYSTEM":
            fields["system"] = value
        elif cmd == "MESSAGE":
            fields["messages"].append({"role": role, "content": value})
        elif cmd == "PARAMETER":
            key, _, raw = value.partition(" ")
            raw = raw.strip()
            parsed: Any
            if raw.startswith('"'):
                parsed = json.loads(raw) if raw.endswith('"') else shlex.split(raw)[0]
            else:
                try:
                    parsed = json.loads(raw)
                except ValueError:
                    parsed = raw
            fields["parameters"].setdefault(key, []).append(parsed)
        else:
            raise TunestackError(f"Unknown Modelfile instruction {cmd}.")
    if "from_" not in fields:
        raise TunestackError("The Modelfile has no FROM line.")
    return Modelfile(**fields)
