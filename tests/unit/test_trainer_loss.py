"""The label-only loss equals transformers' own causal-LM loss, value and gradients."""

from __future__ import annotations

import pytest
import torch

from services.trainer.loss import label_only_loss, supports_label_only_logits

transformers = pytest.importorskip("transformers")


def tiny_llama(tie: bool = True) -> torch.nn.Module:
    cfg = transformers.LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=tie,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg)


def batch() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    ids = torch.randint(0, 97, (3, 11))
    labels = ids.clone()
    labels[:, :4] = -100  # prompt
    labels[1, 8:] = -100  # padding of a shorter row
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("num_items", [None, 40])
def test_label_only_loss_matches_stock_loss_and_gradients(tie: bool, num_items: int | None) -> None:
    model = tiny_llama(tie)
    inputs = batch()
    kw = {"num_items_in_batch": torch.tensor(num_items)} if num_items else {}
    stock = model(**inputs, **kw).loss
    stock.backward()
    stock_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    ours = label_only_loss(model, inputs, kw.get("num_items_in_batch"))
    ours.backward()
    assert torch.allclose(ours, stock, atol=1e-6), (ours, stock)
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, stock_grads[n], atol=1e-6), n


def test_label_only_applies_to_peft_wrapped_llama_only() -> None:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_llama(), LoraConfig(r=4, target_modules="all-linear"))
    assert supports_label_only_logits(model)
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2))
    assert not supports_label_only_logits(gpt2)
