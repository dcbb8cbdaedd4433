"""Chat templates: how a conversation becomes text, and where each assistant turn is.

By default the model's own chat template (tokenizer_config / GGUF metadata) is used, so
a model is trained in exactly the format it is later prompted with by llama.cpp, Ollama
or `tunestack llm chat`. A few built-ins cover tokenizers without a template or users who
want LLaMA-Factory's names:

  default | tokenizer   the tokenizer's chat template (note: LLaMA-Factory's `default`
                        is a "Human:/Assistant:" format; here it means the model's own)
  chatml                <|im_start|>role ... <|im_end|>, no default system prompt
  qwen                  ChatML with Qwen's default system prompt
  llama3                <|start_header_id|>role<|end_header_id|> ... <|eot_id|>

Loss masking never parses the template: for the i-th assistant turn the conversation is
rendered up to the turn with the generation prompt and again including the turn; the
difference is exactly the text the model must produce (reply plus end-of-turn token).
A template whose rendering of a prefix is not a prefix of the full rendering (some
reasoning templates drop earlier turns' content) is refused with a clear message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import BadInput
from services.trainer.datasets import Message

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' "
    "+ message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class BuiltinTemplate:
    jinja: str
    stop_words: tuple[str, ...]
    default_system: str | None = None


BUILTINS: dict[str, BuiltinTemplate] = {
    "chatml": BuiltinTemplate(CHATML, ("<|im_end|>",)),
    "qwen": BuiltinTemplate(
        CHATML,
        ("<|im_end|>",),
        "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
    ),
    "llama3": BuiltinTemplate(LLAMA3, ("<|eot_id|>",)),
}
TOKENIZER_NAMES = ("default", "tokenizer")
# End-of-turn markers of common chat templates; used to find a tokenizer template's stops.
KNOWN_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")

IGNORE_INDEX = -100


@dataclass
class ChatTemplate:
    """A resolved template: the Jinja source (None = tokenizer's own) and its stops."""

    name: str
    jinja: str | None
    stop_words: list[str]
    default_system: str | None = None
    source: str = ""  # the Jinja text actually used (for tools detection and meta.json)
    _stop_ids: list[int] = field(default_factory=list)

    # ---- rendering ---------------------------------------------------------------
    def messages_for(
        self, messages: list[Message], system: str | None, tools: Any = None
    ) -> tuple[list[dict[str, str]], Any]:
        """Chat messages as the template expects them, and the tools it should get."""
        system = system or self.default_system
        pass_tools = None
        if tools:
            if "tools" in self.source:
                pass_tools = tools if isinstance(tools, list) else [tools]
            else:  # the template cannot show tools: describe them in the system prompt
                desc = "You have access to the following tools:\n" + json.dumps(
                    tools, ensure_ascii=False
                )
                system = f"{system}\n\n{desc}" if system else desc
        out = [{"role": "system", "content": system}] if system else []
        out += [{"role": m.role, "content": m.content} for m in messages]
        return out, pass_tools

    def render(
        self,
        tokenizer: Any,
        messages: list[dict[str, str]],
        *,
        add_generation_prompt: bool,
        tools: Any = None,
    ) -> str:
        kwargs: dict[str, Any] = {}
        if self.jinja is not None:
            kwargs["chat_template"] = self.jinja
        if tools:
            kwargs["tools"] = tools
        try:
            text = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs
            )
        except Exception as e:  # jinja raise_exception() or a template bug
            raise BadInput(
                f"The '{self.name}' chat template could not render a conversation: {e}",
                hint="Pick another template (template: chatml) or fix the record's roles.",
            ) from e
        return str(text)

    def prompt_text(
        self,
        tokenizer: Any,
        messages: list[Message],
        system: str | None = None,
        tools: Any = None,
    ) -> str:
        """The text to generate from: the conversation plus the assistant header."""
        msgs, tls = self.messages_for(messages, system, tools)
        return self.render(tokenizer, msgs, add_generation_prompt=True, tools=tls)

    def turn_segments(
        self, tokenizer: Any, messages: list[Message], system: str | None, tools: Any = None
    ) -> list[tuple[str, str]]:
        """(prompt text, response text) for every assistant turn, in order.

        Concatenated they give the whole rendered conversation; each response segment is
        what the model must learn to write, including its end-of-turn token.
        """
        msgs, tls = self.messages_for(messages, system, tools)
        offset = len(msgs) - len(messages)
        segments: list[tuple[str, str]] = []
        done = ""
        for i, m in enumerate(messages):
            if m.role != "assistant":
                continue
            upto = msgs[: offset + i]
            prompt = self.render(tokenizer, upto, add_generation_prompt=True, tools=tls)
            full = self.render(
                tokenizer, msgs[: offset + i + 1], add_generation_prompt=False, tools=tls
            )
            if not prompt.startswith(done) or not full.startswith(prompt):
                raise BadInput(
                    f"The '{self.name}' chat template does not render conversations "
                    "incrementally (an earlier turn changes when a later one is added), so "
                    "the assistant's tokens cannot be located for loss masking.",
                    hint="Set template: chatml (or another built-in) in the config.",
                )
            segments.append((prompt[len(done) :], full[len(prompt) :]))
            done = full
        return segments

    # ---- stopping ----------------------------------------------------------------
    def stop_token_ids(self, tokenizer: Any) -> list[int]:
        """Single-token stop words (end-of-turn, eos) as ids for generate()."""
        ids: list[int] = []
        unk = getattr(tokenizer, "unk_token_id", None)
        for w in [*self.stop_words, tokenizer.eos_token]:
            if not w:
                continue
            tid = tokenizer.convert_tokens_to_ids(w)
            if isinstance(tid, int) and tid >= 0 and tid != unk and tid not in ids:
                ids.append(tid)
        return ids

    def stop_strings(self, tokenizer: Any) -> list[str]:
        """Stop words that are not single tokens in this vocabulary (matched as text)."""
        single = set(self.stop_token_ids(tokenizer))
        return [w for w in self.stop_words if tokenizer.convert_tokens_to_ids(w) not in single]


def resolve_template(
    name: str | None, tokenizer: Any, default_system: str | None = None
) -> ChatTemplate:
    """The template named in the config, or the tokenizer's own when none is named."""
    key = (name or "default").lower()
    if key in TOKENIZER_NAMES:
        src = getattr(tokenizer, "chat_template", None)
        if isinstance(src, dict):  # multiple named templates: use "default"
            src = src.get("default") or next(iter(src.values()), None)
        if not src:
            raise BadInput(
                "This tokenizer has no chat template.",
                hint="Set template: chatml (or qwen, llama3) in the training config.",
            )
        stops = [w for w in KNOWN_END_OF_TURN if w in src]
        if tokenizer.eos_token and tokenizer.eos_token not in stops:
            stops.append(tokenizer.eos_token)
        return ChatTemplate("default", None, stops, default_system, source=str(src))
    if key in BUILTINS:
        b = BUILTINS[key]
        return ChatTemplate(
            key, b.jinja, list(b.stop_words), default_system or b.default_system, source=b.jinja
        )
    raise BadInput(
        f"Unknown template '{name}'.",
        hint="Supported: default (the model's own chat template), "
        + ", ".join(BUILTINS)
        + ". Leave template unset to use the model's own.",
    )


def chat_format(template: ChatTemplate) -> str | None:
    """The llama.cpp chat_format name that matches a template, for serving the result."""
    if "<|im_start|>" in template.source:
        return "chatml"
    if "<|start_header_id|>" in template.source:
        return "llama-3"
    return None
