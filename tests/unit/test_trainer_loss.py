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


def test_finetuning_types_select_the_right_parameters() -> None:
    from services.trainer.config import TrainConfig
    from services.trainer.model_loading import apply_finetuning, linear_module_names

    def cfg(**kw: object) -> TrainConfig:
        return TrainConfig(model_name_or_path="m", dataset=["d"], **kw)  # type: ignore[arg-type]

    model = tiny_llama()
    assert linear_module_names(model) == [
        "down_proj",
        "gate_proj",
        "k_proj",
        "o_proj",
        "q_proj",
        "up_proj",
        "v_proj",
    ]
    lora = apply_finetuning(tiny_llama(), cfg(lora_target="q_proj,v_proj", lora_rank=2))
    trained = {n for n, p in lora.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n and ("q_proj" in n or "v_proj" in n) for n in trained)

    frozen = apply_finetuning(
        tiny_llama(), cfg(finetuning_type="freeze", freeze_trainable_layers=1)
    )
    trained = {n for n, p in frozen.named_parameters() if p.requires_grad}
    assert trained and all(n.startswith("model.layers.1.") for n in trained)
    mlp_only = apply_finetuning(
        tiny_llama(),
        cfg(finetuning_type="freeze", freeze_trainable_layers=-1, freeze_trainable_modules="mlp"),
    )
    trained = {n for n, p in mlp_only.named_parameters() if p.requires_grad}
    assert trained and all(n.startswith("model.layers.0.mlp.") for n in trained)

    full = apply_finetuning(tiny_llama(), cfg(finetuning_type="full"))
    assert all(p.requires_grad for p in full.parameters())

    from services.common.errors import BadInput

    with pytest.raises(BadInput, match="matches no linear layer"):
        apply_finetuning(tiny_llama(), cfg(lora_target="c_attn"))


def test_gradient_checkpointing_gives_the_same_lora_gradients() -> None:
    """LLaMA-Factory's default (checkpointing on) must not change what LoRA learns."""
    from services.trainer.config import TrainConfig
    from services.trainer.model_loading import apply_finetuning

    grads = []
    for ckpt in (False, True):
        torch.manual_seed(3)
        cfg = TrainConfig(
            model_name_or_path="m", dataset=["d"], gradient_checkpointing=ckpt, lora_rank=2
        )
        model = apply_finetuning(tiny_llama(), cfg)
        model.train()
        for n, p in model.named_parameters():  # non-zero B so A gets gradients too
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.1, generator=torch.Generator().manual_seed(5))
        label_only_loss(model, batch()).backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-6), n
