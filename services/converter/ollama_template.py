"""Translate a tokenizer's Jinja chat template into Ollama's Go template syntax.

A Modelfile without the right TEMPLATE is the classic "my fine-tuned model never stops"
bug: Ollama then sends `{{ .Prompt }}` bare and the model rambles past its turn. Jinja and
Go's text/template are different languages, so we do not transpile arbitrary Jinja;
instead each supported chat format (ChatML for SmolLM2/Qwen, Llama 3, Gemma) has a Go
template written for it, parameterised by what varies between models of that family (the
default system prompt a ChatML template injects when the conversation has none). A
template is accepted only after the model's own Jinja and our Go template's semantics
(mirrored in Python by `render_go_semantics`) render the same strings on a set of probe
conversations; tests/unit/test_converter_ollama_template.py checks the Go text itself
with Go's real text/template.

The Go templates iterate `.Messages` the way Ollama executes them (template/template.go):
system messages stay in `.Messages`, consecutive same-role messages are merged with a
blank line, and a conversation that ends with an assistant message is continued, not
closed. BOS is not part of the template: llama.cpp and Ollama add it when tokenizing
(tokenizer.ggml.add_bos_token), so a Jinja template's leading `bos_token` is compared
without it. Jinja's `| trim` on message content has no Go counterpart in Ollama's
function set; contents are passed as they are (they are equal for trimmed input).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.common.errors import TunestackError

PROBE = "\u0000probe\u0000"

CHATML_GO = (
    '{{- if and .Messages (ne (index .Messages 0).Role "system") }}<|im_start|>system\n'
    "__DEFAULT_SYSTEM__<|im_end|>\n"
    "{{ end }}"
    "{{- range $i, $_ := .Messages }}"
    "{{- $last := eq (len (slice $.Messages $i)) 1 -}}"
    "<|im_start|>{{ .Role }}\n"
    "{{ .Content }}"
    '{{- if or (ne .Role "assistant") (not $last) }}<|im_end|>\n{{ end }}'
    '{{- if and $last (ne .Role "assistant") }}<|im_start|>assistant\n{{ end }}'
    "{{- end }}"
)
CHATML_GO_NO_DEFAULT = CHATML_GO.split("{{ end }}", 1)[1]

LLAMA3_GO = (
    "{{- range $i, $_ := .Messages }}"
    "{{- $last := eq (len (slice $.Messages $i)) 1 -}}"
    "<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
    "{{ .Content }}"
    '{{- if or (ne .Role "assistant") (not $last) }}<|eot_id|>{{ end }}'
    '{{- if and $last (ne .Role "assistant") }}'
    "<|start_header_id|>assistant<|end_header_id|>\n\n{{ end }}"
    "{{- end }}"
)

GEMMA_GO = (
    "{{- $first := true }}"
    "{{- range $i, $_ := .Messages }}"
    "{{- $last := eq (len (slice $.Messages $i)) 1 }}"
    '{{- if ne .Role "system" -}}'
    '<start_of_turn>{{ if eq .Role "assistant" }}model{{ else }}{{ .Role }}{{ end }}\n'
    "{{ if and $first $.System }}{{ $.System }}\n\n{{ end }}"
    "{{- .Content }}"
    '{{- if or (ne .Role "assistant") (not $last) }}<end_of_turn>\n{{ end }}'
    "{{- $first = false }}"
    '{{- if and $last (ne .Role "assistant") }}<start_of_turn>model\n{{ end }}'
    "{{- end }}"
    "{{- end }}"
)

# End-of-turn markers per family; the tokenizer's eos is added when it differs.
FAMILY_STOPS = {
    "chatml": ["<|im_end|>"],
    "llama3": ["<|eot_id|>"],
    "gemma": ["<end_of_turn>"],
}


@dataclass(frozen=True)
class GoTemplate:
    family: str
    template: str
    stops: list[str]
    default_system: str | None = None
    notes: list[str] = field(default_factory=list)


class UntranslatableTemplate(TunestackError):
    pass


def _escape_go_text(text: str) -> str:
    """Literal text inside a Go template: only an opening `{{` would be misread."""
    return text.replace("{{", '{{ "{{" }}')


def family_of(jinja: str) -> str | None:
    if "<|im_start|>" in jinja:
        return "chatml"
    if "<|start_header_id|>" in jinja:
        return "llama3"
    if "<start_of_turn>" in jinja:
        return "gemma"
    return None


def render_jinja(
    jinja: str,
    messages: list[dict[str, str]],
    *,
    bos_token: str = "",
    eos_token: str = "",
) -> str:
    """The model's own template, rendered as transformers renders it (generation prompt
    when the last message is not the assistant's, continuation when it is)."""
    from transformers.utils.chat_template_utils import render_jinja_template

    cont = bool(messages) and messages[-1]["role"] == "assistant"
    rendered: Any = render_jinja_template(
        conversations=[messages],
        chat_template=jinja,
        add_generation_prompt=not cont,
        continue_final_message=cont,
        bos_token=bos_token,
        eos_token=eos_token,
    )
    text = str(rendered[0][0])
    if bos_token and "bos_token" in jinja and text.startswith(bos_token):
        text = text[len(bos_token) :]  # the tokenizer adds BOS at run time
    return text


def _default_system(jinja: str, bos: str, eos: str) -> str | None:
    """The system prompt a ChatML template injects when the conversation has none."""
    text = render_jinja(jinja, [{"role": "user", "content": PROBE}], bos_token=bos, eos_token=eos)
    head = "<|im_start|>system\n"
    if not text.startswith(head):
        return None
    end = text.find("<|im_end|>")
    return text[len(head) : end] if end > 0 else None


def ollama_collate(messages: list[dict[str, str]]) -> tuple[str, list[dict[str, str]]]:
    """Ollama's collate(): join system texts into .System, merge same-role neighbours."""
    system: list[str] = []
    out: list[dict[str, str]] = []
    for m in messages:
        if m["role"] == "system":
            system.append(m["content"])
        if out and out[-1]["role"] == m["role"] and m["role"] != "tool":
            out[-1] = {**out[-1], "content": out[-1]["content"] + "\n\n" + m["content"]}
        else:
            out.append(dict(m))
    return "\n\n".join(system), out


def render_go_semantics(t: GoTemplate, messages: list[dict[str, str]]) -> str:
    """What our Go template for `t.family` produces, written out in Python.

    Used at export time to prove the chosen Go template equals the model's Jinja on probe
    conversations; the unit tests check this function against Go's own text/template.
    """
    system, msgs = ollama_collate(messages)
    out: list[str] = []
    if t.family == "chatml":
        if t.default_system is not None and msgs and msgs[0]["role"] != "system":
            out.append(f"<|im_start|>system\n{t.default_system}<|im_end|>\n")
        for i, m in enumerate(msgs):
            last = i == len(msgs) - 1
            out.append(f"<|im_start|>{m['role']}\n{m['content']}")
            if m["role"] != "assistant" or not last:
                out.append("<|im_end|>\n")
            if last and m["role"] != "assistant":
                out.append("<|im_start|>assistant\n")
    elif t.family == "llama3":
        for i, m in enumerate(msgs):
            last = i == len(msgs) - 1
            out.append(f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content']}")
            if m["role"] != "assistant" or not last:
                out.append("<|eot_id|>")
            if last and m["role"] != "assistant":
                out.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
    elif t.family == "gemma":
        first = True
        for i, m in enumerate(msgs):
            last = i == len(msgs) - 1
            if m["role"] == "system":
                continue
            role = "model" if m["role"] == "assistant" else m["role"]
            out.append(f"<start_of_turn>{role}\n")
            if first and system:
                out.append(f"{system}\n\n")
            out.append(m["content"])
            if m["role"] != "assistant" or not last:
                out.append("<end_of_turn>\n")
            first = False
            if last and m["role"] != "assistant":
                out.append("<start_of_turn>model\n")
    else:
        raise UntranslatableTemplate(f"No Go template for family '{t.family}'.")
    return "".join(out)


# Conversations the Jinja and Go renderings must agree on (system first or absent; the
# turn structure every supported family accepts: user/assistant alternating).
PROBES: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "Hello there."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}],
    [
        {"role": "system", "content": "You answer in French."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Bonjour !"},
        {"role": "user", "content": "How are you?\nTell me."},
    ],
    [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one."},
    ],
    [{"role": "user", "content": "Complete: the sky is"}, {"role": "assistant", "content": "bl"}],
]


def translate(
    jinja: str,
    *,
    bos_token: str = "",
    eos_token: str = "",
    probes: list[list[dict[str, str]]] | None = None,
) -> GoTemplate:
    """The Go template equivalent to `jinja`, proven on probe conversations, or raise."""
    family = family_of(jinja)
    if family is None:
        raise UntranslatableTemplate(
            "The chat template is not one we can translate for Ollama (ChatML, Llama 3, Gemma).",
            hint="Write a TEMPLATE for it into the Modelfile by hand; llama.cpp deploys are "
            "unaffected (llama.cpp reads the Jinja template from the GGUF).",
        )
    default = _default_system(jinja, bos_token, eos_token) if family == "chatml" else None
    if family == "chatml":
        go = (
            CHATML_GO.replace("__DEFAULT_SYSTEM__", _escape_go_text(default))
            if default is not None
            else CHATML_GO_NO_DEFAULT
        )
    else:
        go = {"llama3": LLAMA3_GO, "gemma": GEMMA_GO}[family]
    stops = list(FAMILY_STOPS[family])
    if eos_token and eos_token not in stops and eos_token in jinja:
        stops.append(eos_token)
    t = GoTemplate(family, go, stops, default)
    mismatches = []
    for conv in probes or PROBES:
        try:
            want = render_jinja(jinja, conv, bos_token=bos_token, eos_token=eos_token)
        except Exception as e:  # the template rejects this shape (e.g. raise_exception)
            mismatches.append(f"jinja refused {[m['role'] for m in conv]}: {e}")
            continue
        got = render_go_semantics(t, conv)
        if got != want:
            mismatches.append(f"{[m['role'] for m in conv]}: jinja {want!r} != go {got!r}")
    if mismatches:
        raise UntranslatableTemplate(
            f"The {family} Go template does not reproduce this model's Jinja template: "
            + "; ".join(mismatches[:2]),
            hint="Write a TEMPLATE for it into the Modelfile by hand.",
        )
    return t


def as_dict(t: GoTemplate) -> dict[str, Any]:
    return {
        "family": t.family,
        "stops": t.stops,
        "default_system": t.default_system,
    }
