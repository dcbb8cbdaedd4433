"""Causal-LM loss computed only where there is something to learn.

The stock forward pass projects every position through the output head (hidden x vocab,
49,152 columns for SmolLM2) and keeps the float32 logits, their log-softmax and their
gradient for the whole padded batch, although SFT trains only the response tokens
(about 30% of positions in our data, fewer with long prompts). Here the decoder runs as
usual and the head is applied to the labelled positions alone: the same loss and
gradients (tests/unit/test_trainer_loss.py checks equality against the stock loss), a
fraction of the head's compute, and far less peak memory.

Used only for plain decoder architectures whose head is a bare linear layer (no logit
soft-capping or scaling); anything else takes the stock path.
"""

from __future__ import annotations

from typing import Any

PLAIN_HEAD_MODELS = frozenset({"llama", "mistral", "qwen2", "qwen3", "smollm3"})
IGNORE_INDEX = -100


def causal_lm(model: Any) -> Any:
    """The *ForCausalLM module inside PEFT / accelerate wrappers."""
    m = getattr(model, "module", model)  # DDP
    if hasattr(m, "get_base_model"):  # PeftModel
        m = m.get_base_model()
    return m


def supports_label_only_logits(model: Any) -> bool:
    m = causal_lm(model)
    cfg = getattr(m, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) not in PLAIN_HEAD_MODELS:
        return False
    if any(
        getattr(cfg, k, None) for k in ("final_logit_softcapping", "logit_scale", "logits_scaling")
    ):
        return False
    return hasattr(m, "get_decoder") and m.get_output_embeddings() is not None


def label_only_loss(model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
    """Mean token cross-entropy over labelled positions, like transformers' ForCausalLMLoss.

    With gradient accumulation the Trainer passes the label count of the whole
    accumulated batch (num_items_in_batch); the sum is divided by it, as the stock loss does.
    """
    import torch.nn.functional as F

    m = causal_lm(model)
    labels = inputs["labels"]
    out = m.get_decoder()(
        input_ids=inputs["input_ids"],
        attention_mask=inputs.get("attention_mask"),
        use_cache=False,
    )
    target = labels[:, 1:]
    keep = target != IGNORE_INDEX
    hidden = out.last_hidden_state[:, :-1, :][keep]
    logits = m.get_output_embeddings()(hidden).float()
    loss = F.cross_entropy(logits, target[keep], reduction="sum")
    if num_items_in_batch is not None:
        return loss / num_items_in_batch
    return loss / keep.sum().clamp(min=1)
