"""`tunestack llm synth` on real components: the test stack's llama.cpp server (the
bundled SmolLM2-135M) as the teacher, and the offline path (`--qa` over samples/corpus)
through the CLI, followed by a 2-step `llm train` on its output (1 sample per step,
cut to 256 tokens: it proves the dataset loads and trains, not what it teaches).

The 135M model is a weak teacher: it rarely writes usable JSON pairs. What is checked is
the path a real server takes (HTTP, parsing, the progress file, resume, the messages),
not the quality of its questions; the fake teacher of tests/unit/test_rag_synth.py
checks the examples made from good pairs.
"""

from __future__ import annotations

import json
from pathlib import Path

from services.common.embedders import EmbedderPool
from services.common.errors import BadInput
from services.rag_api.rag_synth import service as synth
from services.rag_api.rag_synth.passages import SynthPassage
from services.rag_api.rag_synth.teacher import Teacher, TeacherConfig
from services.rag_api.settings import RagSettings
from tests.conftest import SAMPLES
from tests.integration.conftest import Stack

PASSAGES = [
    "Support answers the phone Monday to Friday from 09:00 to 17:00 CET.",
    "The LO-200 Path Light costs 49 EUR and has a 3-year warranty.",
    "Employees get 28 days of paid annual leave per calendar year.",
]
TRAIN = """\
model_name_or_path: smollm2-135m-instruct
stage: sft
finetuning_type: lora
lora_target: q_proj,v_proj
lora_rank: 4
dataset: rag_sft
dataset_dir: {data}
max_samples: 2
cutoff_len: 256
per_device_train_batch_size: 1
max_steps: 2
logging_steps: 1
save_steps: 1000
plot_loss: false
learning_rate: 1.0e-3
seed: 7
"""


def test_the_stacks_llm_as_teacher_and_a_rerun_resumes(stack: Stack, tmp_path: Path) -> None:
    """In-process (the CLI's messages are tests/unit's): 3 chunks asked over real HTTP,
    then the same run again asks nothing."""
    corpus = tmp_path / "notes.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in PASSAGES), "utf-8")
    out = tmp_path / "data"
    cfg = TeacherConfig(
        base_url=stack.settings.llm_url, model=stack.settings.default_llm, per_chunk=1
    )
    req = synth.SynthRequest(out_dir=out, corpus=corpus, teacher=cfg)
    s, pool = RagSettings(home=stack.home), EmbedderPool(stack.registry)
    asked: list[str] = []

    class Counting(Teacher):
        def ask(self, passage: SynthPassage) -> str:
            asked.append(passage.id)
            return super().ask(passage)

    def once() -> synth.SynthResult | None:
        teacher = Counting(cfg)
        try:
            return synth.synthesize(s, req, pool, teacher=teacher)
        except BadInput as e:  # no usable pair: said plainly, with what to do
            assert e.message.endswith("the teacher gave no usable pair for 3 chunks.")
            assert e.hint is not None and "stronger teacher" in e.hint
            return None
        finally:
            teacher.close()

    res = once()
    assert len(asked) == 3
    progress = out / "rag_sft.teacher.jsonl"
    rows = [json.loads(line) for line in progress.read_text("utf-8").splitlines()]
    assert len(rows) == 3 and len({row["key"] for row in rows}) == 1
    pairs = sum(len(row["pairs"]) for row in rows)
    if res is not None:  # the teacher gave at least one usable pair
        assert res.teacher is not None and res.teacher.pairs == pairs == res.examples > 0
    else:
        assert pairs == 0 and all(row["rejected"] for row in rows)
    again = once()  # resumes: nothing asked, nothing appended
    assert len(asked) == 3 and progress.read_text("utf-8").count("\n") == 3
    assert (again is None) == (res is None)
    if again is not None:
        assert again.teacher is not None and again.teacher.resumed == 3


def test_qa_set_over_the_sample_corpus_then_llm_train_loads_it(
    stack: Stack, tmp_path: Path
) -> None:
    out = tmp_path / "data"
    r = stack.cli(
        "llm", "synth", "--qa", str(SAMPLES / "llm_rag" / "lumen_rag_qa.jsonl"),
        "--docs", str(SAMPLES / "corpus"), "--out", str(out), "--json",
        timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout)
    assert res["questions"] == res["examples"] == 23 and res["skipped"] == {}
    assert 0 < res["abstentions"] < 12 and res["unreadable_files"] == []
    recs = json.loads((out / "rag_sft.json").read_text("utf-8"))
    assert len(recs) == 23
    config = tmp_path / "train.yaml"
    config.write_text(TRAIN.format(data=out), "utf-8")
    r = stack.cli("llm", "train", "--config", str(config), "run_name=rag-synth", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    run = stack.home / "models" / "llm" / "rag-synth"
    log = [json.loads(x) for x in (run / "adapter" / "trainer_log.jsonl").read_text().splitlines()]
    assert [x["current_steps"] for x in log if "loss" in x] == [1, 2]
