"""Run llama.cpp's convert_hf_to_gguf.py (or, with --script, convert_lora_to_gguf.py)
unmodified, optionally carrying a base GGUF's tokenizer into the new file.

    python -m services.converter.hf_to_gguf_runner --scripts DIR [--script NAME] \
        [--tokenizer-from BASE.gguf] [--chat-template-file FILE] -- <the script's args>

Why: a base model that reached us as a GGUF (the bundled SmolLM2) has an HF tokenizer that
transformers rebuilt from the GGUF's vocabulary. llama.cpp's converter identifies BPE
pre-tokenizers by hashing how the HF tokenizer splits a test string, and llama-family
models first try sentencepiece; a rebuilt tokenizer matches neither, so the stock script
refuses or guesses. The base GGUF already holds the exact tokenizer llama.cpp needs
(tokenizer.ggml.model/pre/tokens/token_type/merges/special ids/add_bos...), and the merged
model's vocabulary is that same vocabulary, so we write those fields verbatim (read with
the gguf-py of the same sdist) instead of the converter's vocab step. Nothing in
llama.cpp's files changes: the model class the script picks is subclassed in this process
with one method, set_vocab, replaced. The chat template is the one the run was trained
with (the merged folder's), not the base's.
"""

from __future__ import annotations

import argparse
import importlib
import runpy
import sys
from pathlib import Path
from typing import Any

TOKENIZER_PREFIX = "tokenizer.ggml."


def copy_tokenizer_fields(base_gguf: Path, writer: Any, chat_template: str | None) -> int:
    """Copy every tokenizer.ggml.* key of `base_gguf` into `writer`; returns the vocab size."""
    import gguf  # the sdist's gguf-py: importable only once main() has put it on sys.path

    reader = gguf.GGUFReader(str(base_gguf))
    n_tokens = 0
    for name, field in reader.fields.items():
        if not name.startswith(TOKENIZER_PREFIX):
            continue
        value = field.contents()
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(name, value, vtype, sub_type=field.types[-1])
            if name == "tokenizer.ggml.tokens":
                n_tokens = len(value)
        else:
            writer.add_key_value(name, value, vtype)
    if chat_template is None:
        tmpl = reader.fields.get("tokenizer.chat_template")
        chat_template = tmpl.contents() if tmpl is not None else None
    if chat_template:
        writer.add_chat_template(chat_template)
    return n_tokens


def carrying_tokenizer(model_class: Any, base_gguf: Path, chat_template: str | None) -> Any:
    """A subclass of the converter's model class whose vocab comes from `base_gguf`."""

    class CarriedTokenizer(model_class):
        model_arch = model_class.model_arch  # the converter's registry requires it

        def set_vocab(self) -> None:
            n = copy_tokenizer_fields(base_gguf, self.gguf_writer, chat_template)
            want = int(self.hparams.get("vocab_size") or n)
            if n != want:
                raise SystemExit(
                    f"tokenizer of {base_gguf.name} has {n} tokens but the model's vocab_size "
                    f"is {want}; it is not this model's base"
                )

    CarriedTokenizer.__name__ = model_class.__name__
    CarriedTokenizer.__qualname__ = model_class.__qualname__
    return CarriedTokenizer


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    p = argparse.ArgumentParser(prog="python -m services.converter.hf_to_gguf_runner")
    p.add_argument("--scripts", type=Path, required=True)
    p.add_argument("--script", default="convert_hf_to_gguf.py")
    p.add_argument("--tokenizer-from", type=Path)
    p.add_argument("--chat-template-file", type=Path)
    args = p.parse_args(argv[:split])
    rest = argv[split + 1 :]

    # The script does this itself too; doing it first makes `import gguf` below (and in
    # copy_tokenizer_fields) the sdist's gguf-py, not the PyPI gguf in the venv.
    sys.path.insert(0, str(args.scripts))
    sys.path.insert(1, str(args.scripts / "gguf-py"))
    module: Any = importlib.import_module(Path(args.script).stem)
    if args.tokenizer_from is not None:
        template = (
            args.chat_template_file.read_text(encoding="utf-8") if args.chat_template_file else None
        )
        original = module.get_model_class

        def get_model_class(*a: Any, **kw: Any) -> Any:
            return carrying_tokenizer(original(*a, **kw), args.tokenizer_from, template)

        module.get_model_class = get_model_class
    script = args.scripts / args.script
    sys.argv = [str(script), *rest]
    entry = getattr(module, "main", None)
    if callable(entry):
        entry()
    else:  # convert_lora_to_gguf.py has no main(): its work is its `__main__` block
        runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
