"""Resume bookkeeping and output files: torn checkpoints, log truncation, loss plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.common.errors import BadInput
from services.trainer.callbacks import truncate_jsonl
from services.trainer.config import TrainConfig
from services.trainer.plots import plot_loss, smooth
from services.trainer.train import _choose_resume, complete_checkpoints, run_name_for


def make_ckpt(root: Path, step: int, state: str | None) -> Path:
    d = root / f"checkpoint-{step}"
    d.mkdir(parents=True)
    if state is not None:
        (d / "trainer_state.json").write_text(state)
    return d


def test_complete_checkpoints_skip_torn_and_missing_state(tmp_path: Path) -> None:
    make_ckpt(tmp_path, 2, json.dumps({"global_step": 2}))
    make_ckpt(tmp_path, 10, json.dumps({"global_step": 10}))
    make_ckpt(tmp_path, 12, '{"global_st')  # killed while writing the state
    make_ckpt(tmp_path, 14, None)  # killed before the state
    (tmp_path / "checkpoint-x").mkdir()
    assert [d.name for d in complete_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-10"]


def cfg(**kw: object) -> TrainConfig:
    return TrainConfig(model_name_or_path="m", dataset=["d"], **kw)  # type: ignore[arg-type]


def test_resume_rules(tmp_path: Path) -> None:
    said: list[str] = []
    assert _choose_resume(cfg(), tmp_path / "new", said.append) is None
    make_ckpt(tmp_path, 4, json.dumps({"global_step": 4}))
    # like LLaMA-Factory: an existing checkpoint is resumed unless told otherwise
    assert _choose_resume(cfg(), tmp_path, said.append) == str(tmp_path / "checkpoint-4")
    assert "Resuming" in said[0]
    assert _choose_resume(cfg(resume_from_checkpoint=True), tmp_path, said.append).endswith("-4")
    assert _choose_resume(cfg(resume_from_checkpoint="4"), tmp_path, said.append).endswith("-4")
    assert _choose_resume(cfg(overwrite_output_dir=True), tmp_path, said.append) is None
    with pytest.raises(BadInput, match="not empty"):
        _choose_resume(cfg(resume_from_checkpoint=False), tmp_path, said.append)
    with pytest.raises(BadInput, match="no complete checkpoint"):
        _choose_resume(cfg(resume_from_checkpoint=True), tmp_path / "empty", said.append)
    with pytest.raises(BadInput, match="not a complete checkpoint"):
        _choose_resume(cfg(resume_from_checkpoint="9"), tmp_path, said.append)


def test_run_names(tmp_path: Path) -> None:
    assert run_name_for(cfg(run_name="r1"), None) == "r1"
    assert run_name_for(cfg(output_dir=str(tmp_path / "saves" / "lora")), None) == "lora"
    assert run_name_for(cfg(), Path("examples/train_lora.yaml")) == "train_lora"
    with pytest.raises(BadInput, match="base model"):
        run_name_for(cfg(run_name="smollm2-135m-instruct"), None)


def test_truncate_jsonl_drops_later_steps_and_torn_lines(tmp_path: Path) -> None:
    p = tmp_path / "log.jsonl"
    p.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"step": 4}\n{"st', encoding="utf-8")
    truncate_jsonl(p, "step", 2)
    assert p.read_text(encoding="utf-8") == '{"step": 1}\n{"step": 2}\n'


def test_loss_plot_is_a_png(tmp_path: Path) -> None:
    hist = [{"step": i, "loss": 2.0 / i} for i in range(1, 20)] + [{"step": 19, "eval_loss": 0.5}]
    written = plot_loss(tmp_path, hist, ("loss", "eval_loss"))
    assert [p.name for p in written] == ["training_loss.png", "training_eval_loss.png"]
    assert written[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert smooth([1.0, 1.0, 1.0]) == [1.0, 1.0, 1.0] and smooth([]) == []
