"""The parity gate and the stop check: is a GGUF the same model as the merged HF model,
and does it end its turns?

Parity: the merged HF model (fp32, transformers) greedy-decodes each prompt of a fixed
set for `n_tokens` tokens (or until an end-of-turn token). Each GGUF is then run by
llama.cpp on exactly those token ids, teacher-forced, and we count the positions where
its top-1 token equals the HF model's greedy token. Teacher forcing is deliberate: two
free-running decoders that differ once (a near-tie flipped by quantization noise) differ
in every later token, which would measure where the first tie sits, not how close the
file is. The free-running comparison is recorded too (`greedy_identical`,
`mean_first_divergence`) so a reader sees both. The prompt text is also tokenized by
llama.cpp from the GGUF's own vocabulary and compared with the HF tokenization
(`tokenizer_match`), which catches a wrong or missing pre-tokenizer.

Why not compare free-running text: on this repository's own evidence (README, Models) the
bundled SmolLM2 puts p=0.152 on "The" and p=0.140 on "L" as the first answer token to
"What is the capital of France?"; 8-bit activation quantization, which every llama.cpp
quantized matmul does, flips that tie. The file is faithful (97% teacher-forced agreement)
while its greedy text differs from the first word.

Stop check: llama.cpp greedy-decodes each prompt with the file up to `max_tokens`; a
prompt passes when generation ends on one of the end-of-turn tokens before that budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.common.fdcapture import capture_stderr
from services.common.records import ParityResult, StopCheck
from services.trainer.datasets import Message
from services.trainer.inference import LoadedLLM

# Thresholds for "ok" (fraction of compared tokens whose top-1 agrees).
THRESHOLDS: dict[str, float] = {
    "f32": 0.98,
    "f16": 0.98,
    "bf16": 0.98,
    "q8_0": 0.90,
    "q6_k": 0.80,
    "q5_k_m": 0.75,
    "q4_k_m": 0.75,
    "q5_0": 0.75,
    "q5_1": 0.75,
    "q4_0": 0.75,
    "q4_1": 0.75,
}
STOP_CHECK_MIN = 0.95
REPEAT_PENALTY = 1.1  # Ollama's default (repeat_last_n 64); see stop_check

PROMPTS: tuple[str, ...] = (
    "What is the capital of France?",
    "Give me three tips for staying focused while studying.",
    "Explain what a database index is in one paragraph.",
    "Write a haiku about autumn leaves.",
    "How do I reverse a list in Python?",
    "What is the difference between weather and climate?",
    "Summarize the plot of Romeo and Juliet in two sentences.",
    "What should I pack for a weekend hiking trip?",
    "Translate 'good morning' into Spanish.",
    "Why is the sky blue?",
    "Name three primary colors.",
    "What is 12 times 7?",
    "How can I reset a forgotten password?",
    "Describe a cat to someone who has never seen one.",
    "What are the opening hours of a typical bakery?",
    "Suggest a name for a small coffee shop.",
    "What does HTTP stand for?",
    "How do plants make their food?",
    "Who wrote Pride and Prejudice?",
    "Give me a short motivational quote.",
)


@dataclass
class Reference:
    """One prompt: its token ids and the HF model's greedy continuation."""

    text: str
    prompt_ids: list[int]
    continuation: list[int]


def chat_prompt(llm: LoadedLLM, question: str) -> str:
    """The prompt the deployed model sees: run's template, run's system prompt."""
    return str(llm.template.prompt_text(llm.tokenizer, [Message("user", question)], None))


def hf_references(
    llm: LoadedLLM, prompts: list[str], n_tokens: int, stop_ids: list[int]
) -> list[Reference]:
    """Greedy continuations from the merged model, one prompt at a time (no padding, so
    the reference is exactly what an unbatched server would compute)."""
    import torch

    refs = []
    tok = llm.tokenizer
    for q in prompts:
        text = chat_prompt(llm, q)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            out = llm.model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=n_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                eos_token_id=stop_ids or None,
                pad_token_id=tok.pad_token_id,
            )
        refs.append(Reference(text, list(ids), out[0, len(ids) :].tolist()))
    return refs


def _open(gguf: Path, threads: int, n_ctx: int) -> Any:
    from llama_cpp import Llama

    with capture_stderr():
        return Llama(
            model_path=str(gguf),
            n_ctx=n_ctx,
            n_batch=min(n_ctx, 512),
            n_threads=threads,
            logits_all=True,
            verbose=False,
        )


def gguf_parity(
    gguf: Path, refs: list[Reference], quant: str, threads: int, stop_ids: list[int]
) -> ParityResult:
    """Teacher-forced top-1 agreement of `gguf` with the HF references (plus free-running
    and tokenizer comparisons); `ok` only at or above the type's threshold."""
    t0 = time.monotonic()
    n_ctx = max(len(r.prompt_ids) + len(r.continuation) for r in refs) + 8
    llm = _open(gguf, threads, max(n_ctx, 256))
    agree = total = identical = tok_match = 0
    divergences = []
    for r in refs:
        cont = r.continuation
        seq = r.prompt_ids + cont[:-1]
        llm.reset()
        llm.eval(seq)
        scores = np.asarray(llm.scores[len(r.prompt_ids) - 1 : len(seq)])
        top1 = scores.argmax(axis=-1).tolist()
        agree += sum(int(a == b) for a, b in zip(top1, cont, strict=True))
        total += len(cont)
        # free-running greedy with the file, same budget
        llm.reset()
        free: list[int] = []
        for t in llm.generate(r.prompt_ids, temp=0.0, top_k=1, reset=True):
            free.append(int(t))
            if len(free) >= len(cont) or t in stop_ids:
                break
        first = next((i for i, (a, b) in enumerate(zip(free, cont, strict=False)) if a != b), None)
        if first is None and len(free) == len(cont):
            identical += 1
            divergences.append(len(cont))
        else:
            divergences.append(first if first is not None else min(len(free), len(cont)))
        ids = llm.tokenize(r.text.encode(), add_bos=False, special=True)
        tok_match += int(list(ids) == r.prompt_ids)
    del llm
    rate = agree / total if total else 0.0
    threshold = THRESHOLDS.get(quant, 0.75)
    return ParityResult(
        top1_agreement=round(rate, 4),
        threshold=threshold,
        ok=rate >= threshold and tok_match == len(refs),
        tokens_compared=total,
        prompts=len(refs),
        greedy_identical=identical,
        mean_first_divergence=round(sum(divergences) / max(len(divergences), 1), 2),
        tokenizer_match=f"{tok_match}/{len(refs)}",
        method="teacher-forced top-1 vs merged HF fp32 greedy",
        seconds=round(time.monotonic() - t0, 2),
    )


def stop_check(
    gguf: Path, prompts: list[list[int]], stop_ids: list[int], threads: int, max_tokens: int
) -> StopCheck:
    """Share of prompts whose greedy answer ends on an end-of-turn token within budget.

    Decoding is greedy with Ollama's default repeat penalty (1.1 over the last 64 tokens,
    which llama-cpp-python's default window also is): a small model decoded with no
    penalty at all can loop on a list ("tips") forever whatever its template, which would
    measure the decoder settings, not whether the file knows when a turn ends.
    """
    t0 = time.monotonic()
    n_ctx = max(len(p) for p in prompts) + max_tokens + 8
    llm = _open(gguf, threads, max(n_ctx, 256))
    stopped = 0
    lengths = []
    running_on: list[int] = []
    for i, ids in enumerate(prompts):
        n = 0
        ended = False
        for t in llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=REPEAT_PENALTY, reset=True):
            if t in stop_ids:
                ended = True
                break
            n += 1
            if n >= max_tokens:
                break
        stopped += int(ended)
        lengths.append(n)
        if not ended:
            running_on.append(i)
    del llm
    rate = stopped / len(prompts) if prompts else 0.0
    return StopCheck(
        stopped=stopped,
        prompts=len(prompts),
        rate=round(rate, 4),
        threshold=STOP_CHECK_MIN,
        ok=rate >= STOP_CHECK_MIN,
        max_tokens=max_tokens,
        repeat_penalty=REPEAT_PENALTY,
        mean_answer_tokens=round(sum(lengths) / max(len(lengths), 1), 1),
        not_stopped=running_on,  # prompt indices that ran out of budget
        stop_token_ids=stop_ids,
        seconds=round(time.monotonic() - t0, 2),
    )
