"""The trainer's registry records and its service layer, without loading a model.

A trained run is registered as a typed LlmRecord carrying LLaMA-Factory's facts (base,
data hash, stats, parameters, metrics); eval scores are added to it under the registry's
lock without losing what others recorded; the service functions take their machine
defaults from TrainSettings, as the CLI did.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.common.errors import BadInput, NotFound
from services.common.records import Deployment, LlmRecord
from services.common.registry import Registry
from services.trainer import datasets as ds
from services.trainer import service
from services.trainer.config import TrainConfig
from services.trainer.evaluate import _record_scores, default_dataset_dir
from services.trainer.model_loading import BaseRef, registry_name, resolve_base
from services.trainer.preprocess import Example, ExampleDataset, PrepStats
from services.trainer.settings import TrainSettings
from services.trainer.templates import ChatTemplate
from services.trainer.train import PreparedData, RunPaths, _run_record
from tests.unit._trainer_helpers import write_dataset

ALPACA = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(3)]


def test_run_record_is_a_typed_llm_record_with_llamafactory_fields(tmp_path: Path) -> None:
    ddir = write_dataset(tmp_path / "data", {"qa": {"file_name": "qa.json"}}, {"qa.json": ALPACA})
    loaded = ds.load_datasets(["qa"], ddir, stage="sft", max_samples=None, seed=1)
    cfg = TrainConfig(model_name_or_path="smollm2-135m-instruct", dataset=["qa"], lora_rank=4)
    out = tmp_path / "home" / "models" / "llm" / "r1" / "adapter"
    paths = RunPaths("r1", out.parent, out, ddir)
    base = BaseRef("smollm2-135m-instruct", tmp_path / "hf", "HuggingFaceTB/x", registered=True)
    stats = PrepStats(records=3, per_dataset={"qa": 3})
    example = Example(input_ids=[1, 2], labels=[-100, 2], sample_ids=[0])
    template = ChatTemplate("chatml", None, ["<|im_end|>"], source="<|im_start|>{{ x }}")
    data = PreparedData(ExampleDataset([example] * 2), None, stats, loaded, template)

    rec = _run_record(cfg, paths, base, data, {"global_step": 5}, {}, "ckpt/checkpoint-2")

    assert isinstance(rec, LlmRecord) and rec.kind == "llm" and not rec.is_base
    assert rec.model_path == rec.adapter_path == rec.output_dir == str(out) and rec.is_lora
    assert rec.base_model == "smollm2-135m-instruct" and rec.base_model_path == str(tmp_path / "hf")
    assert rec.chat_format == "chatml" and rec.stop_words == ["<|im_end|>"]
    assert rec.data_hash == ds.data_hash(loaded) and len(rec.data_hash) == 64
    assert rec.data == {
        "datasets": ["qa"],
        "dataset_dir": str(ddir),
        "stats": stats.to_dict(),
        "train_sequences": 2,
        "validation_sequences": 0,
    }
    assert rec.parameters["lora_rank"] == 4 and rec.metrics == {"train": {"global_step": 5}}
    assert rec.resumed_from == "ckpt/checkpoint-2" and rec.source == "tunestack llm train"

    # The record round-trips through meta.json (what `llm eval/chat/export` read back).
    registry = Registry(tmp_path / "home")
    out.mkdir(parents=True)
    registry.write(rec, replace=True)
    raw = json.loads((out.parent / "meta.json").read_text())
    assert raw["adapter_path"] == str(out) and raw["schema_version"] >= 2
    assert registry.llm("r1").record == rec

    full = cfg.model_copy(update={"finetuning_type": "full"})
    assert _run_record(full, paths, base, data, {}, {"eval_loss": 1.0}, None).adapter_path is None
    eval_rec = _run_record(cfg, paths, base, data, {"a": 1}, {"eval_loss": 1.0}, None)
    assert eval_rec.metrics == {"train": {"a": 1}, "eval": {"eval_loss": 1.0}}


def test_eval_scores_are_added_to_the_record_keeping_everything_else(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    adapter = registry.entry_dir("llm", "run1") / "adapter"
    adapter.mkdir(parents=True)
    deployed = Deployment(to="ollama", name="run1", base_url="http://o:11434")
    registry.write(
        LlmRecord(
            name="run1",
            model_path=str(adapter),
            base_model="smollm2-135m-instruct",
            metrics={"train": {"global_step": 3}},
            deployments=[deployed],
        )
    )
    _record_scores(registry, "run1", "heldout", {"predict_rouge-l": 12.5}, tmp_path / "r1")
    _record_scores(registry, "run1", "a+b", {"predict_rouge-l": 3.0}, tmp_path / "r2")

    rec = registry.llm("run1").record
    assert rec.metrics["train"] == {"global_step": 3}
    assert rec.metrics["predict"] == {
        "heldout": {"predict_rouge-l": 12.5, "report": str(tmp_path / "r1")},
        "a+b": {"predict_rouge-l": 3.0, "report": str(tmp_path / "r2")},
    }
    assert rec.deployments == [deployed]


def test_eval_data_defaults_to_the_runs_training_data(tmp_path: Path) -> None:
    run = LlmRecord(name="r", model_path="x", base_model="b", data={"dataset_dir": "/d/run"})
    assert default_dataset_dir(run, "data") == Path("/d/run")
    assert default_dataset_dir(None, "data") == Path("data")
    assert default_dataset_dir(LlmRecord(name="b", model_path="x"), "fb") == Path("fb")


def settings(tmp_path: Path) -> TrainSettings:
    return TrainSettings(
        home=tmp_path, dataset_dir="fallback", max_new_tokens=33, eval_batch_size=5, threads=1
    )


def test_eval_request_takes_machine_defaults_from_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def fake_evaluate(name: str, datasets: list[str], registry: Registry, **kw: Any) -> str:
        seen.update(name=name, datasets=datasets, home=registry.home, **kw)
        return "result"

    monkeypatch.setattr(service, "evaluate", fake_evaluate)
    s = settings(tmp_path)
    req = service.EvalLlmRequest(run="r", datasets=["a", "b"], max_samples=2)
    assert service.evaluate_llm(s, req) == "result"
    assert seen["name"] == "r" and seen["datasets"] == ["a", "b"] and seen["home"] == s.home_dir
    assert (seen["max_new_tokens"], seen["batch_size"], seen["threads"]) == (33, 5, 1)
    assert seen["fallback_dataset_dir"] == "fallback" and seen["dataset_dir"] is None
    assert seen["max_samples"] == 2 and seen["progress"] is None

    explicit = service.EvalLlmRequest(run="r", datasets=["a"], max_new_tokens=7, batch_size=2)
    service.evaluate_llm(s, explicit)
    assert (seen["max_new_tokens"], seen["batch_size"]) == (7, 2)


def test_open_chat_uses_the_runs_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    def fake_load(name: str, registry: Registry, **kw: Any) -> str:
        calls.append({"name": name, **kw})
        return "llm"

    monkeypatch.setattr(service, "load_llm", fake_load)
    chat = service.open_chat(settings(tmp_path), "r", system="Be brief.", temperature=0.5)
    assert calls == [{"name": "r", "template": None, "system": "Be brief.", "threads": 1}]
    assert chat.llm == "llm" and chat.system == "Be brief."
    assert (chat.max_new_tokens, chat.temperature) == (33, 0.5)


def test_train_request_problems_are_messages_before_anything_loads(tmp_path: Path) -> None:
    s = settings(tmp_path)
    with pytest.raises(BadInput, match="does not exist"):
        service.train(s, service.TrainRequest(tmp_path / "missing.yaml"), print)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model_name_or_path: m\ndataset: d\n", encoding="utf-8")
    with pytest.raises(BadInput, match="key=value"):
        service.train(s, service.TrainRequest(cfg, ["max_steps"]), print)
    with pytest.raises(BadInput, match="did you mean 'max_steps'"):
        service.train(s, service.TrainRequest(cfg, ["max_step=2"]), print)


def test_a_pulled_hub_id_resolves_to_its_registry_name(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    weights = tmp_path / "snapshot"
    weights.mkdir()
    registry.write(
        LlmRecord(
            name="qwen--qwen2.5-0.5b-instruct",
            hf_id="Qwen/Qwen2.5-0.5B-Instruct",
            source="hf:Qwen/Qwen2.5-0.5B-Instruct",
            model_path=str(weights),
        )
    )
    registry.ensure("llm", "smollm2-135m-instruct")  # bundled: its hf_id is not a match
    assert registry_name("Qwen/Qwen2.5-0.5B-Instruct", registry) == "qwen--qwen2.5-0.5b-instruct"
    assert registry_name("HuggingFaceTB/SmolLM2-135M-Instruct", registry) == (
        "HuggingFaceTB/SmolLM2-135M-Instruct"
    )
    assert registry_name("smollm2-135m-instruct", registry) == "smollm2-135m-instruct"
    with pytest.raises(NotFound, match="models pull org/not-pulled"):  # never downloaded
        resolve_base("org/not-pulled", registry)
