"""Write (and read back) an Ollama Modelfile: FROM, TEMPLATE, PARAMETER stop, SYSTEM,
MESSAGE and ADAPTER.

`tunestack llm deploy --to ollama` sends Ollama the fields of the Modelfile we wrote, parsed
back from the file, so the file a user can `ollama create -f` and what we register can
never drift apart.
"""

from __future__ import annotations

import json
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


def _param(value: Any) -> str:
    """A PARAMETER value as Ollama reads it: a string in quotes, which Ollama strips
    without unescaping anything (so no JSON escapes: `"Say "hi""` is `Say "hi"`); one
    with a line break, or starting with a quote (it would read as triple quotes), in
    triple quotes."""
    if isinstance(value, str):
        if "\n" in value or "\r" in value or value.startswith('"'):
            return _quote(value)
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render(mf: Modelfile, header: str = "") -> str:
    lines = [f"# {line}" for line in header.splitlines()] if header else []
    lines.append(f"FROM {mf.from_}")
    lines += [f"ADAPTER {a}" for a in mf.adapters]
    if mf.template is not None:
        lines.append(f"TEMPLATE {_quote(mf.template)}")
    for key, values in mf.parameters.items():
        for v in values:
            lines.append(f"PARAMETER {key} {_param(v)}")
    if mf.system:
        lines.append(f"SYSTEM {_quote(mf.system)}")
    for m in mf.messages:
        lines.append(f"MESSAGE {m['role']} {_quote(m['content'])}")
    return "\n".join(lines) + "\n"


def _value(text: str, i: int, cmd: str) -> tuple[str, bool, int]:
    '''The value that starts at text[i] (the rest of its line, or a quoted block over
    several lines), whether it was quoted, and where the next line starts.

    As Ollama's parser does: a value ends at the first end of line where what was read
    (spaces trimmed) is whole: in triple quotes (six characters at least), in quotes, or
    unquoted; inner quotes are kept as they are (SYSTEM """Say "hi"""" is: Say "hi").
    '''
    n = len(text)
    pos = i
    while True:
        j = text.find("\n", pos)
        end = n if j < 0 else j
        seg = text[i:end].strip()
        if seg.startswith('"""'):
            if len(seg) >= 6 and seg.endswith('"""'):
                return seg[3:-3], True, end + 1
        elif seg.startswith('"'):
            if len(seg) >= 2 and seg.endswith('"'):
                return seg[1:-1], True, end + 1
        else:
            return seg, False, end + 1
        if j < 0:
            raise TunestackError(f"Unterminated quotes after {cmd} in the Modelfile.")
        pos = j + 1


def parse(text: str) -> Modelfile:
    """Read the subset of Modelfile syntax `render` writes (and hand edits in that style)
    the way Ollama reads it, so `ollama create -f` and our /api/create agree."""
    fields: dict[str, Any] = {"parameters": {}, "messages": [], "adapters": []}
    i = 0
    n = len(text)
    while i < n:
        j = text.find("\n", i)
        line = text[i : n if j < 0 else j]
        stripped = line.lstrip()
        if not stripped.strip() or stripped.startswith("#"):
            i = n if j < 0 else j + 1
            continue
        word = stripped.split(None, 1)[0]
        cmd = word.upper()
        start = i + (len(line) - len(stripped)) + len(word)
        role = key = ""
        if cmd in ("MESSAGE", "PARAMETER"):  # one more word before the value
            rest = text[start : n if j < 0 else j]
            lead = len(rest) - len(rest.lstrip())
            first = rest.lstrip().split(None, 1)[0] if rest.strip() else ""
            role = key = first
            start += lead + len(first)
        value, quoted, i = _value(text, start, cmd)
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
            parsed: Any = value
            if not quoted:
                try:
                    parsed = json.loads(value)
                except ValueError:
                    parsed = value
            fields["parameters"].setdefault(key, []).append(parsed)
        else:
            raise TunestackError(f"Unknown Modelfile instruction {cmd}.")
    if "from_" not in fields:
        raise TunestackError("The Modelfile has no FROM line.")
    return Modelfile(**fields)
