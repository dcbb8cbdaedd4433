"""Training config: LLaMA-Factory keys, overrides, and clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.errors import BadInput
from services.trainer.config import load_config, parse_overrides


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(text, encoding="utf-8")
    return p


BASE = "model_name_or_path: smollm2-135m-instruct\ndataset: a,b\n"


def test_llamafactory_yaml_with_overrides(tmp_path: Path) -> None:
    p = write(tmp_path, BASE + "learning_rate: 1.0e-4\noverwrite_cache: true\nlora_rank: 4\n")
    cfg, ignored = load_config(
        p, parse_overrides(["max_steps=7", "learning_rate=2e-4", "bf16=true"])
    )
    assert cfg.dataset == ["a", "b"]
    assert cfg.max_steps == 7 and cfg.bf16 is True
    assert cfg.learning_rate == pytest.approx(2e-4)
    assert cfg.lora_rank == 4 and cfg.effective_lora_alpha == 8  # LLaMA-Factory: 2 x rank
    assert ignored == ["overwrite_cache"]
    assert cfg.template is None and cfg.stage == "sft" and cfg.finetuning_type == "lora"
    assert cfg.use_gradient_checkpointing  # on by default, as in LLaMA-Factory
    off, _ = load_config(p, {"disable_gradient_checkpointing": True})
    assert not off.use_gradient_checkpointing
    forced, _ = load_config(
        p, {"disable_gradient_checkpointing": True, "gradient_checkpointing": True}
    )
    assert forced.use_gradient_checkpointing


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    with pytest.raises(BadInput) as e:
        load_config(write(tmp_path, BASE + "learning_rat: 1.0e-4\n"))
    assert "learning_rat" in e.value.message and "learning_rate" in e.value.message
    assert "cfg.yaml" in e.value.message


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ("stage: ppo\n", "not supported yet"),
        ("stage: simpo\n", "stage: dpo with pref_loss: simpo"),
        ("stage: foo\n", "unknown stage"),
        ("quantization_bit: 3\n", "4 or 8"),
        ("finetuning_type: adapter\n", "finetuning_type"),
        ("quantization_bit: 4\nfinetuning_type: full\n", "needs finetuning_type: lora"),
        ("bf16: true\nfp16: true\n", "pick one"),
        ("report_to: wandb\n", "report_to"),
        ("neat_packing: true\n", "packing: true"),
        ("do_train: false\n", "llm eval"),
        ("cutoff_len: 2\n", "cutoff_len"),
    ],
)
def test_invalid_values_are_refused_with_the_key(tmp_path: Path, extra: str, needle: str) -> None:
    with pytest.raises(BadInput) as e:
        load_config(write(tmp_path, BASE + extra))
    assert needle in e.value.message


def test_missing_model_and_dataset(tmp_path: Path) -> None:
    with pytest.raises(BadInput) as e:
        load_config(write(tmp_path, "dataset: a\n"))
    assert "model_name_or_path" in e.value.message
    with pytest.raises(BadInput) as e:
        load_config(write(tmp_path, "model_name_or_path: x\n"))
    assert "dataset" in e.value.message


def test_bad_yaml_and_bad_override(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="not valid YAML"):
        load_config(write(tmp_path, "a: [1,\n"))
    with pytest.raises(BadInput, match="key=value"):
        parse_overrides(["max_steps"])
    with pytest.raises(BadInput, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_qlora_refused_on_cpu_before_loading_anything(tmp_path: Path) -> None:
    import torch

    from services.trainer.model_loading import check_quantization

    if torch.cuda.is_available():
        pytest.skip("a GPU is present; the CPU refusal does not apply")
    cfg, _ = load_config(write(tmp_path, BASE + "quantization_bit: 4\n"))
    with pytest.raises(BadInput) as e:
        check_quantization(cfg)
    assert "CUDA" in e.value.message and e.value.hint and "LoRA" in e.value.hint
