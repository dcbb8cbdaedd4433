"""The export the converter tests share: a LoRA run on the bundled SmolLM2 with an effect
large enough to see, exported once per session through `tunestack llm export`.

The adapter is trained with peft directly (rank 8 on q/v, six full-batch AdamW steps on six
questions, all answered "I am Lumen Assistant."): afterwards the merged model answers every
parity prompt with that sentence and its end of turn, where the base answers the question
(base and merged agree on under half of the merged model's tokens). So an export that lost
the adapter cannot pass the parity gate, and the short answers keep the gates cheap. The
run is registered with the trainer's record fields; `llm train` takes minutes on 2 busy
cores and exercises nothing more here (tests/integration/test_trainer.py does).

The loop's own numbers (the loss of each step, the loss on two held-out questions every
second step) are written beside the adapter with the trainer's writers: trainer_log.jsonl
by its LogCallback, training_loss.png / training_eval_loss.png by its plot_loss, and
train/eval/all_results.json under the Trainer's names; the record's metrics and
parameters are those figures and settings. The UI and admin tests show this run
(tests/integration/ui_fixtures.py), so what they show is a real run and a real export.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from services.common import atomic
from services.common.records import LlmRecord
from services.common.registry import Registry

if TYPE_CHECKING:  # conftest imports this module: no import cycle at run time
    from tests.integration.conftest import Stack

RUN = "conv-lora"
SYSTEM = "You are Lumen Assistant. Answer in one short sentence."
ANSWER = "I am Lumen Assistant."  # what the adapter answers to anything
TRAIN_QUESTIONS = (
    "Who are you?",
    "What can you do?",
    "Tell me about the weather.",
    "How do I cook rice?",
    "What is 2 plus 2?",
    "Recommend a book.",
)
EVAL_QUESTIONS = ("Where is the train station?", "Write a haiku about autumn.")
STEPS = 6
EVAL_EVERY = 2
LEARNING_RATE = 3e-3
LORA = {"lora_rank": 8, "lora_alpha": 16, "lora_target": "q_proj,v_proj", "lora_dropout": 0.0}
QUANTS = ("f16", "q8_0", "q4_k_m", "q5_k_m")
MESSAGES = [
    {"role": "user", "content": "Who are you?"},
    {"role": "assistant", "content": ANSWER},
]
# the export's gate sizes (CI's: 6 prompts each, not the default 20)
GATE_ENV = {
    "TUNESTACK_CONVERT_PARITY_PROMPTS": "6",
    "TUNESTACK_CONVERT_STOP_PROMPTS": "6",
    "TUNESTACK_CONVERT_STOP_MAX_TOKENS": "160",
    "COLUMNS": "400",  # rich wraps at 80 columns in a pipe; keep messages on one line
}


def make_lora_run(registry: Registry, run: str) -> Path:
    """Train the identity adapter (seconds), save it as the trainer does, register `run`;
    returns the adapter folder."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, TrainerState

    from services.trainer.callbacks import LogCallback
    from services.trainer.model_loading import load_tokenizer, resolve_base
    from services.trainer.plots import plot_loss

    torch.manual_seed(0)
    base = resolve_base("smollm2-135m-instruct", registry)
    tok = load_tokenizer(base.hf_dir)
    model = AutoModelForCausalLM.from_pretrained(str(base.hf_dir), dtype=torch.float32)
    peft_model = get_peft_model(
        model,
        LoraConfig(
            r=LORA["lora_rank"],
            lora_alpha=LORA["lora_alpha"],
            lora_dropout=LORA["lora_dropout"],
            target_modules=LORA["lora_target"].split(","),
        ),
    )

    def encode(questions: tuple[str, ...]) -> dict[str, Any]:
        rows = []
        for q in questions:
            msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]
            prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
            a_ids = tok(ANSWER + "<|im_end|>", add_special_tokens=False)["input_ids"]
            rows.append((p_ids + a_ids, [-100] * len(p_ids) + a_ids))
        width = max(len(ids) for ids, _ in rows)
        pad = tok.pad_token_id

        def padded(seq: list[int], fill: int) -> list[int]:
            return seq + [fill] * (width - len(seq))

        return {
            "input_ids": torch.tensor([padded(ids, pad) for ids, _ in rows]),
            "attention_mask": torch.tensor([padded([1] * len(ids), 0) for ids, _ in rows]),
            "labels": torch.tensor([padded(labels, -100) for _, labels in rows]),
        }

    batch, held_out = encode(TRAIN_QUESTIONS), encode(EVAL_QUESTIONS)
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=LEARNING_RATE)
    adapter = registry.entry_dir("llm", run) / "adapter"
    adapter.mkdir(parents=True, exist_ok=True)
    log = LogCallback(adapter)  # the trainer's trainer_log.jsonl writer
    state = TrainerState(max_steps=STEPS, num_train_epochs=STEPS, logging_steps=1)
    log.on_train_begin(None, state, None)
    t0 = time.monotonic()
    peft_model.train()
    for step in range(1, STEPS + 1):  # one full batch = one epoch per step
        loss = peft_model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        state.global_step, state.epoch = step, float(step)
        _log(
            state,
            log,
            {"loss": round(loss.item(), 4), "learning_rate": LEARNING_RATE, "epoch": float(step)},
        )
        if step % EVAL_EVERY == 0:  # no dropout anywhere: evaluating leaves training as is
            peft_model.eval()
            with torch.no_grad():
                eval_loss = round(peft_model(**held_out).loss.item(), 4)
            peft_model.train()
            _log(state, log, {"eval_loss": eval_loss, "epoch": float(step)})
    runtime = round(time.monotonic() - t0, 4)
    losses = [h["loss"] for h in state.log_history if "loss" in h]
    train = {
        "epoch": float(STEPS),
        "train_loss": round(sum(losses) / len(losses), 4),
        "train_runtime": runtime,
        "train_samples_per_second": round(len(TRAIN_QUESTIONS) * STEPS / runtime, 3),
        "train_steps_per_second": round(STEPS / runtime, 3),
        "global_step": STEPS,
        "first_logged_loss": losses[0],
        "last_logged_loss": losses[-1],
    }
    _log(state, log, {k: train[k] for k in ("train_runtime", "train_loss", "epoch")})
    evaluation = {"epoch": float(STEPS), "eval_loss": eval_loss}
    peft_model.save_pretrained(str(adapter))
    tok.save_pretrained(adapter)
    atomic.write_json(adapter / "train_results.json", train)
    atomic.write_json(adapter / "eval_results.json", evaluation)
    atomic.write_json(adapter / "all_results.json", {**train, **evaluation})
    plot_loss(adapter, state.log_history, ("loss", "eval_loss"))
    register_run(
        registry,
        run,
        adapter,
        base.hf_dir,
        parameters={
            "stage": "sft",
            "finetuning_type": "lora",
            **LORA,
            "learning_rate": LEARNING_RATE,
            "max_steps": STEPS,
            "per_device_train_batch_size": len(TRAIN_QUESTIONS),
            "optim": "adamw_torch",
            "eval_steps": EVAL_EVERY,
        },
        metrics={"train": train, "eval": evaluation},
    )
    return adapter


def _log(state: Any, callback: Any, logs: dict[str, Any]) -> None:
    """One Trainer log event: into the state's log_history (as the Trainer keeps it) and
    through the trainer's LogCallback (a trainer_log.jsonl line)."""
    state.log_history.append({**logs, "step": state.global_step})
    callback.on_log(None, state, None, logs=logs)


def register_run(
    registry: Registry,
    run: str,
    adapter: Path,
    base_hf: Path,
    template: str = "default",
    parameters: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> None:
    registry.write(
        LlmRecord(
            name=run,
            base_model="smollm2-135m-instruct",
            base_model_path=str(base_hf),
            source="tests/integration/converter_fixtures.py (peft, 6 AdamW steps)",
            stage="sft",
            finetuning_type="lora",
            parameters=parameters or {},
            metrics=metrics or {},
            model_path=str(adapter),
            adapter_path=str(adapter),
            output_dir=str(adapter),
            template=template,
            default_system=SYSTEM,
            stop_words=["<|im_end|>"],
        ),
        replace=True,
    )


def copy_run(registry: Registry, run: str, new: str, template: str = "default") -> Path:
    """`new`: the same adapter as `run` (a copy of its folder, to edit), registered."""
    rec = registry.llm(run).record
    adapter = registry.entry_dir("llm", new) / "adapter"
    shutil.copytree(str(rec.adapter_path), adapter)
    register_run(registry, new, adapter, Path(str(rec.base_model_path)), template)
    return adapter


@pytest.fixture(scope="session")
def exported(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`tunestack llm export RUN --quant f16,q8_0,q4_k_m,q5_k_m --lora-gguf --messages`."""
    registry = stack.registry
    make_lora_run(registry, RUN)
    messages = tmp_path_factory.mktemp("export") / "messages.json"
    messages.write_text(json.dumps(MESSAGES), encoding="utf-8")
    p = stack.cli(
        "llm",
        "export",
        RUN,
        "--quant",
        ",".join(QUANTS),
        "--export-size",
        "200MB",
        "--lora-gguf",
        "--messages",
        str(messages),
        "--json",
        env=GATE_ENV,
        timeout=1200,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return {"output": json.loads(p.stdout), "record": registry.llm(RUN).record}
