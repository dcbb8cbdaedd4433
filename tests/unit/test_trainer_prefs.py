"""Preference training (stage dpo / kto): the losses against hand computations of TRL's
formulas, the reference model with LoRA, dataset validation, the `llm prefs` dataset, and
short end-to-end runs on a tiny random Llama with the real SmolLM2 tokenizer."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from services.common.errors import BadInput
from services.common.rag_prompt import rag_messages
from services.trainer.config import TrainConfig, load_config
from services.trainer.datasets import load_dataset, load_datasets
from services.trainer.pref_loss import (
    PrefParams,
    aggregate_metrics,
    feedback_loss,
    pair_loss,
    sequence_logps,
)
from services.trainer.prefs_from_eval import ABSTENTION, build_prefs
from tests.unit._trainer_helpers import smollm2_tokenizer, write_dataset

transformers = pytest.importorskip("transformers")


def tiny_llama(seed: int, vocab: int = 97) -> Any:
    cfg = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(cfg).eval()


def pair_batch() -> dict[str, torch.Tensor]:
    """2 pairs -> 4 rows (chosen, chosen, rejected, rejected), prompts masked, padding."""
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(0, 97, (4, 12), generator=g)
    labels = ids.clone()
    labels[:, :5] = -100  # prompt
    labels[1, 9:] = -100  # a shorter chosen answer
    labels[3, 7:] = -100  # an even shorter rejected one
    mask = (labels != -100) | (torch.arange(12) < 5)
    ids[~mask] = 0
    return {"input_ids": ids, "attention_mask": mask.long(), "labels": labels}


def floats(t: torch.Tensor) -> list[float]:
    return [float(x) for x in t.tolist()]


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


# ---- log-probabilities ---------------------------------------------------------------------


def test_label_only_logps_equal_the_full_logits_path_with_gradients() -> None:
    model = tiny_llama(0)
    b = pair_batch()
    full, n_full = sequence_logps(model, **b, label_only=False)
    full.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    fast, n_fast = sequence_logps(model, **b, label_only=True)
    fast.sum().backward()
    assert torch.equal(n_full, n_fast) and n_full.tolist() == [7, 4, 7, 2]
    assert torch.allclose(full, fast, atol=1e-5), (full, fast)
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, grads[n], atol=1e-5), n
    # and it is the plain sum of the labelled tokens' log-softmax
    logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    lp = logits.log_softmax(-1)
    by_hand = sum(float(lp[1, t - 1, b["labels"][1, t]].detach()) for t in range(5, 9))
    assert abs(by_hand - float(full[1])) < 1e-5


# ---- the losses, against hand computations of TRL's formulas ---------------------------------


@pytest.fixture(scope="module")
def logps() -> dict[str, list[float]]:
    """Policy and reference log-probs of one batch under two different tiny models."""
    b = pair_batch()
    with torch.no_grad():
        pol, n = sequence_logps(tiny_llama(0), **b, label_only=True)
        ref, _ = sequence_logps(tiny_llama(1), **b, label_only=True)
    return {"policy": floats(pol), "ref": floats(ref), "n": floats(n)}


def hand_pair_losses(lp: dict[str, list[float]], p: PrefParams) -> list[float]:
    (c0, c1, r0, r1), (rc0, rc1, rr0, rr1), (nc0, nc1, nr0, nr1) = lp["policy"], lp["ref"], lp["n"]
    out = []
    for c, r, rc, rr, nc, nr in ((c0, r0, rc0, rr0, nc0, nr0), (c1, r1, rc1, rr1, nc1, nr1)):
        ca, ra = c / nc, r / nr
        if p.loss_type == "sigmoid":
            z = p.beta * ((c - r) - (rc - rr))
            loss = -(1 - p.label_smoothing) * logsig(z) - p.label_smoothing * logsig(-z)
        elif p.loss_type == "hinge":
            loss = max(0.0, 1 - p.beta * ((c - r) - (rc - rr)))
        elif p.loss_type == "ipo":  # length-averaged, like LLaMA-Factory
            loss = ((ca - ra) - (rc / nc - rr / nr) - 1 / (2 * p.beta)) ** 2
        elif p.loss_type == "orpo":
            log_odds = (ca - ra) - (math.log(1 - math.exp(ca)) - math.log(1 - math.exp(ra)))
            loss = -ca - p.beta * logsig(log_odds)
        else:  # simpo
            loss = -logsig(p.beta * ((ca - ra) - p.simpo_gamma / p.beta))
        out.append(loss + p.ftx * -ca)
    return out


@pytest.mark.parametrize(
    "params",
    [
        PrefParams("sigmoid", beta=0.1),
        PrefParams("sigmoid", beta=0.5, label_smoothing=0.2, ftx=0.3),
        PrefParams("hinge", beta=0.1),
        PrefParams("hinge", beta=2.0),
        PrefParams("ipo", beta=0.1),
        PrefParams("orpo", beta=0.1),
        PrefParams("simpo", beta=2.0, simpo_gamma=0.5),
    ],
    ids=lambda p: f"{p.loss_type}-b{p.beta}-ls{p.label_smoothing}-ftx{p.ftx}",
)
def test_pair_losses_equal_the_formulas(logps: dict[str, list[float]], params: PrefParams) -> None:
    t = {k: torch.tensor(v) for k, v in logps.items()}
    ref = None if params.loss_type in ("orpo", "simpo") else (t["ref"], t["n"])
    loss, metrics = pair_loss((t["policy"], t["n"]), t["n"], ref, params)
    expected = hand_pair_losses(logps, params)
    assert abs(float(loss) - sum(expected) / 2) < 1e-5, (float(loss), expected)

    pol, rf, n = logps["policy"], logps["ref"], logps["n"]
    if params.loss_type in ("orpo", "simpo"):  # rewards: beta x average policy log-prob
        rc = [params.beta * pol[i] / n[i] for i in (0, 1)]
        rr = [params.beta * pol[i] / n[i] for i in (2, 3)]
    else:
        avg = params.loss_type == "ipo"
        d = [(pol[i] - rf[i]) / (n[i] if avg else 1) for i in range(4)]
        rc, rr = [params.beta * d[0], params.beta * d[1]], [params.beta * d[2], params.beta * d[3]]
    assert metrics["rewards/chosen"] == pytest.approx(sum(rc) / 2, abs=1e-5)
    assert metrics["rewards/rejected"] == pytest.approx(sum(rr) / 2, abs=1e-5)
    assert metrics["rewards/margins"] == pytest.approx((sum(rc) - sum(rr)) / 2, abs=1e-5)
    acc = sum(float(a > b) for a, b in zip(rc, rr, strict=True)) / 2
    assert metrics["rewards/accuracies"] == acc


def test_kto_loss_equals_the_formula() -> None:
    p = PrefParams(beta=0.3, kto_chosen_weight=1.5, kto_rejected_weight=0.7, ftx=0.2)
    pol = [-3.0, -5.0, -2.5, -7.0]
    ref = [-3.5, -4.0, -2.0, -6.0]
    n = [3.0, 5.0, 2.0, 4.0]
    tags = [True, False, True, False]
    pol_kl, ref_kl = [-4.0, -6.0, -3.0, -5.5], [-4.2, -5.0, -3.5, -5.0]
    loss, m = feedback_loss(
        (torch.tensor(pol), torch.tensor(n)),
        torch.tensor(pol_kl),
        (torch.tensor(ref), torch.tensor(ref_kl)),
        torch.tensor(tags),
        p,
    )
    kl = max(0.0, sum(a - b for a, b in zip(pol_kl, ref_kl, strict=True)) / 4)

    def sig(x: float) -> float:
        return 1 / (1 + math.exp(-x))

    losses = [
        p.kto_chosen_weight * (1 - sig(p.beta * ((pol[i] - ref[i]) - kl))) for i in (0, 2)
    ] + [p.kto_rejected_weight * (1 - sig(p.beta * (kl - (pol[i] - ref[i])))) for i in (1, 3)]
    sft = sum(-pol[i] / n[i] for i in (0, 2)) / 2
    expected = sum(losses) / 4 + p.ftx * sft / 2 * 4  # LLaMA-Factory's rescaled SFT term
    assert abs(float(loss) - expected) < 1e-5
    assert m["kl"] == pytest.approx(kl) and m["count/chosen"] == 2
    assert m["rewards/chosen_sum"] == pytest.approx(p.beta * (0.5 - 0.5))
    logged = aggregate_metrics({k: [v] for k, v in m.items()})
    assert logged["rewards/rejected"] == pytest.approx(p.beta * ((-1.0) + (-1.0)) / 2)
    assert logged["rewards/margins"] == pytest.approx(
        logged["rewards/chosen"] - logged["rewards/rejected"]
    )


def test_metrics_are_averaged_over_micro_batches_since_the_last_log() -> None:
    stored = {"rewards/accuracies": [1.0, 0.5], "rewards/margins": [0.2, 0.4]}
    assert aggregate_metrics(stored, "eval_") == pytest.approx(
        {"eval_rewards/accuracies": 0.75, "eval_rewards/margins": 0.3}
    )


# ---- the reference model -------------------------------------------------------------------


def test_lora_reference_is_the_base_with_the_adapter_disabled(tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import TrainingArguments

    from services.trainer.pref_trainer import make_preference_trainer_class
    from services.trainer.train import make_trainer_class

    base = tiny_llama(0)
    untouched = copy.deepcopy(base)
    model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear"))
    for n, prm in model.named_parameters():  # a trained-looking adapter: outputs differ
        if "lora_B" in n:
            torch.nn.init.normal_(prm, std=0.5, generator=torch.Generator().manual_seed(2))
    cls = make_preference_trainer_class(make_trainer_class())
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    trainer = cls(model=model, args=args, stage="dpo", params=PrefParams(), use_ref=True)
    b = pair_batch()
    with torch.no_grad():
        expected = untouched(input_ids=b["input_ids"]).logits
        tuned = model(input_ids=b["input_ids"]).logits
        with trainer.reference(model) as (ref, _):
            assert ref is model  # no second copy
            got = ref(input_ids=b["input_ids"]).logits
            ref_logps, _ = sequence_logps(ref, **b, label_only=True)
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(tuned, expected, atol=1e-3)  # the check could fail
    base_logps, _ = sequence_logps(untouched, **b, label_only=True)
    assert torch.allclose(ref_logps, base_logps, atol=1e-5)
    assert all(m.p == 0 for m in model.modules() if isinstance(m, torch.nn.Dropout))


# ---- config and dataset validation ------------------------------------------------------------


def cfg(**kw: Any) -> TrainConfig:
    return TrainConfig(model_name_or_path="m", dataset=["d"], **kw)


def test_preference_keys_follow_llamafactory(tmp_path: Path) -> None:
    c = cfg(stage="dpo")
    assert (c.pref_loss, c.pref_beta, c.pref_ftx, c.simpo_gamma) == ("sigmoid", 0.1, 0.0, 0.5)
    assert c.use_ref_model and not cfg(stage="dpo", pref_loss="simpo").use_ref_model
    assert cfg(stage="kto").use_ref_model and not cfg().use_ref_model
    y = tmp_path / "c.yaml"
    for text, needle in [
        ("stage: orpo\n", "stage: dpo with pref_loss: orpo"),
        ("stage: dpo\npref_loss: kto_pair\n", "stage: kto"),
        ("stage: dpo\npref_loss: hinge\ndpo_label_smoothing: 0.1\n", "pref_loss: sigmoid"),
        ("stage: dpo\npref_loss: orpo\nref_model: x\n", "needs no reference model"),
        ("stage: dpo\nld_alpha: 0.5\n", "ld_alpha"),
        ("stage: dpo\npacking: true\n", "packing"),
        ("stage: dpo\npref_beta: 0\n", "pref_beta"),
    ]:
        y.write_text("model_name_or_path: m\ndataset: d\n" + text, encoding="utf-8")
        with pytest.raises(BadInput) as e:
            load_config(y)
        assert needle in e.value.message, (text, e.value.message)


PAIRS = [{"instruction": "q", "input": "", "chosen": "good", "rejected": "bad"}]
SHAREGPT_PAIRS = [
    {
        "conversations": [
            {"from": "human", "value": "hi"},
            {"from": "gpt", "value": "hello"},
            {"from": "human", "value": "and?"},
        ],
        "chosen": {"from": "gpt", "value": "good"},
        "rejected": {"from": "gpt", "value": "bad"},
    }
]


def test_preference_datasets_are_validated_with_file_record_and_field(tmp_path: Path) -> None:
    entries = {
        "pa": {"file_name": "pa.json", "ranking": True},
        "ps": {"file_name": "ps.json", "ranking": True, "formatting": "sharegpt"},
        "plain": {"file_name": "pa.json"},
        "kto": {"file_name": "k.jsonl", "columns": {"kto_tag": "label"}},
    }
    kto = (
        '{"instruction": "q", "output": "a", "label": true}\n{"instruction": "q", "output": "b"}\n'
    )
    bad_pairs = [{"instruction": "q", "chosen": "good"}]
    bad_share = [{**SHAREGPT_PAIRS[0], "chosen": "good"}]
    d = write_dataset(
        tmp_path, entries, {"pa.json": bad_pairs, "ps.json": bad_share, "k.jsonl": kto}
    )
    with pytest.raises(BadInput, match=r"pa.json record 0, field 'rejected'"):
        load_dataset("pa", d, stage="dpo")
    with pytest.raises(BadInput, match=r"ps.json record 0, field 'chosen': must be an assistant"):
        load_dataset("ps", d, stage="dpo")
    with pytest.raises(BadInput, match=r"k.jsonl record 1 \(line 2\), field 'label'"):
        load_dataset("kto", d, stage="kto")
    with pytest.raises(BadInput) as e:  # before any record is read
        load_dataset("plain", d, stage="dpo")
    assert '"ranking": true' in e.value.message and '"ranking": true' in (e.value.hint or "")
    with pytest.raises(BadInput, match="stage kto trains on single answers"):
        load_dataset("pa", d, stage="kto")

    good = write_dataset(
        tmp_path / "good",
        {"pa": entries["pa"], "ps": entries["ps"]},
        {"pa.json": PAIRS, "ps.json": SHAREGPT_PAIRS},
    )
    loaded = load_datasets(["pa", "ps"], good, stage="dpo", max_samples=None, seed=1)
    conv = loaded[1].conversations[0]
    assert [m.role for m in conv.messages] == ["user", "assistant", "user"]
    assert conv.chosen and conv.chosen.content == "good" and conv.rejected
    with pytest.raises(BadInput, match="stage: dpo"):  # preference data under sft
        load_datasets(["pa"], good, stage="sft", max_samples=None, seed=1)


def test_pairs_share_the_prompt_and_train_only_the_last_answer() -> None:
    from services.trainer.datasets import Conversation, Message
    from services.trainer.pref_data import PairCollator, build_pair_examples
    from services.trainer.preprocess import PrepStats
    from services.trainer.templates import resolve_template

    tok = smollm2_tokenizer()
    tpl = resolve_template("chatml", tok)
    conv = Conversation(
        "x",
        0,
        [Message("user", "hi"), Message("assistant", "hello"), Message("user", "and?")],
        chosen=Message("assistant", "good"),
        rejected=Message("assistant", "a much longer bad answer " * 3),
    )
    stats = PrepStats()
    (ex,) = build_pair_examples([conv], tok, tpl, cutoff_len=512, stats=stats)
    assert tok.decode(ex.chosen) == "good<|im_end|>\n"
    assert tok.decode(ex.prompt).endswith("<|im_start|>assistant\n")
    assert "hello" in tok.decode(ex.prompt)  # history is prompt, never trained
    batch = PairCollator(tok.pad_token_id)([ex.as_dict(), ex.as_dict()])
    assert batch["input_ids"].shape[0] == 4 and batch["sample_ids"].tolist() == [[0], [0]]
    labelled = (batch["labels"] != -100).sum(-1).tolist()
    assert labelled == [len(ex.chosen)] * 2 + [len(ex.rejected)] * 2
    (cut,) = build_pair_examples([conv], tok, tpl, cutoff_len=24, stats=stats)
    assert len(cut.prompt) + max(len(cut.chosen), len(cut.rejected)) <= 24
    assert len(cut.chosen) == len(ex.chosen) and stats.truncated == 1


# ---- llm prefs ------------------------------------------------------------------------------

PASSAGES = [
    {"text": "The LO-200 Path Light costs 49 EUR.", "file_name": "catalog.md"},
    {"text": "Support answers within one business day.", "file_name": "support.html"},
]


def eval_rows() -> list[dict[str, Any]]:
    q = "How much does the LO-200 Path Light cost?"
    return [
        {"question": q, "context": PASSAGES, "answer": "It costs 59 EUR.", "reference": "49 EUR"},
        {"question": q, "context": PASSAGES, "answer": "It costs 49 EUR.", "reference": "49 EUR"},
        {"question": q, "context": PASSAGES, "answer": "49 EUR [1]", "reference": "49 EUR"},
        {
            "question": "How fast does support answer?",
            "context": PASSAGES,
            "answer": "Within a week [2].",
            "reference": "Within one business day.",
            "citation": "[2]",
        },
    ]


def test_prefs_from_eval_writes_a_ranking_dataset_with_the_serving_prompt(tmp_path: Path) -> None:
    report = tmp_path / "eval.jsonl"
    report.write_text("".join(json.dumps(r) + "\n" for r in eval_rows()), encoding="utf-8")
    out = tmp_path / "data"
    write_dataset(out, {"other": {"file_name": "o.json"}}, {})
    res = build_prefs(report, out, "rag_prefs", citation_pairs=False)
    assert (res.rows, res.pairs, res.skipped) == (4, 3, 1)
    assert res.reasons == {"wrong+uncited": 1, "uncited": 1, "wrong": 1}
    info = json.loads((out / "dataset_info.json").read_text())
    assert set(info) == {"other", "rag_prefs"}
    assert (
        info["rag_prefs"]["ranking"] is True and info["rag_prefs"]["file_name"] == "rag_prefs.json"
    )
    recs = json.loads(res.data_file.read_text())
    assert [r["rejected"] for r in recs] == [
        "It costs 59 EUR.",
        "It costs 49 EUR.",
        "Within a week [2].",
    ]
    assert [r["chosen"] for r in recs] == [
        "49 EUR [1]",
        "49 EUR [1]",
        "Within one business day. [2]",
    ]

    # system + instruction is exactly what the RAG API's LangChain prompt sends
    from services.common.rag_prompt import format_context
    from services.rag_api.prompts import PROMPT
    from services.rag_api.retrieval import Hit

    hits = [Hit(str(i), p["text"], "s", p["file_name"], 0, 1.0) for i, p in enumerate(PASSAGES)]
    served = PROMPT.format_messages(context=format_context(hits), question=recs[0]["instruction"])
    assert [m.content for m in served] == [recs[0]["system"], recs[0]["instruction"]]
    assert rag_messages(recs[0]["instruction"], format_context(hits)) == [
        {"role": "system", "content": recs[0]["system"]},
        {"role": "user", "content": recs[0]["instruction"]},
    ]
    # and `llm train` reads it as a preference dataset
    conv = load_dataset("rag_prefs", out, stage="dpo").conversations[0]
    assert conv.system == recs[0]["system"] and conv.rejected is not None


def rag_eval_line(
    answer: str,
    *,
    answerable: bool = True,
    gold: int | None = 1,
    f1: float = 0.0,
    cited: list[int] | None = None,
) -> dict[str, Any]:
    """A questions.jsonl line exactly as `rag eval` writes it (its typed record)."""
    from services.rag_api.rag_eval.metrics import abstained
    from services.rag_api.rag_eval.records import QuestionResult, RetrievedChunk

    chunks = [
        RetrievedChunk(i, f"c{i}", p["file_name"], 0, 0.5, p["text"], gold == i)
        for i, p in enumerate(PASSAGES, start=1)
    ]
    return QuestionResult(
        qid="q1",
        question="How much does the LO-200 Path Light cost?",
        llm="m",
        embedder="e",
        mode="dense",
        lang="en",
        role="dataset",
        answerable=answerable,
        gold_in_collection=answerable,
        answers=["49 EUR", "49 euros"],
        answer=answer,
        abstained=abstained(answer),
        cited=cited or [],
        retrieved=chunks,
        gold_rank=gold,
        scores={"f1": f1},
        seconds=1.0,
        retrieval_ms=5.0,
        prompt_tokens=90,
        completion_tokens=8,
    ).to_dict()


def test_prefs_from_a_rag_eval_report_folder(tmp_path: Path) -> None:
    lines = [
        rag_eval_line("It costs 59 EUR [1].", cited=[1]),  # wrong
        rag_eval_line("49 EUR", f1=1.0),  # right, uncited
        rag_eval_line("49 EUR [1]", f1=1.0, cited=[1]),  # right and cited: skipped
        rag_eval_line("It costs 49 EUR [2].", f1=0.67, cited=[2]),  # cites the wrong passage
        rag_eval_line("It costs 49 EUR.", gold=None),  # gold not retrieved: left out
        rag_eval_line("It costs 20 EUR.", answerable=False),  # invented: abstain instead
        rag_eval_line("I do not know.", answerable=False),  # abstained: right
    ]
    folder = tmp_path / "reports" / "rag-eval-1"
    folder.mkdir(parents=True)
    (folder / "questions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    res = build_prefs(folder, tmp_path / "data", "from_rag_eval", citation_pairs=False)
    assert (res.rows, res.pairs, res.skipped, res.ungrounded) == (6, 4, 2, 1)
    recs = json.loads(res.data_file.read_text())
    assert [(r["chosen"], r["rejected"]) for r in recs] == [
        ("49 EUR [1]", "It costs 59 EUR [1]."),
        ("49 EUR [1]", "49 EUR"),
        ("49 EUR [1]", "It costs 49 EUR [2]."),
        (ABSTENTION, "It costs 20 EUR."),
    ]
    from services.rag_api.rag_eval.metrics import abstained

    assert abstained(ABSTENTION)  # the preferred abstention is one rag eval recognises
    assert all(r["system"] == recs[0]["system"] and "Passage [2]" in r["system"] for r in recs)


def test_prefs_teach_citation_precision(tmp_path: Path) -> None:
    """The preferred answer cites the one gold chunk that holds the reference, not every
    chunk of its file; an answer that also cites a passage without the answer is a
    failure (it lowers rag eval's citation precision); --citation-pairs adds the right
    passage over a wrong one for every grounded row. Without the first, DPO on the sample
    corpus learned to cite both passages (11 of 26 test answers, 3 before); without the
    last, it rambled past its end of turn and failed the export's stop gate."""
    same_file = rag_eval_line("49 EUR", f1=1.0)  # uncited; both chunks of the gold file
    same_file["retrieved"][0]["text"] = "The LO-200 catalog lists lamps."
    same_file["retrieved"][1]["text"] = "The LO-200 Path Light costs 49 EUR."
    for c in same_file["retrieved"]:
        c["gold"] = True
    lines = [
        same_file,
        rag_eval_line("49 EUR [1][2]", f1=1.0, cited=[1, 2]),  # right, also cites [2]
        rag_eval_line("49 EUR [1]", f1=1.0, cited=[1]),  # right and precise
    ]
    report = tmp_path / "questions.jsonl"
    report.write_text("".join(json.dumps(x) + "\n" for x in lines))
    res = build_prefs(report, tmp_path / "data", "p", citation_pairs=False)
    assert (res.pairs, res.skipped, res.citation_pairs) == (2, 1, 0)
    assert res.reasons == {"uncited": 1, "overcited": 1}
    recs = json.loads(res.data_file.read_text())
    assert [(r["chosen"], r["rejected"]) for r in recs] == [
        ("49 EUR [2]", "49 EUR"),  # the chunk that states it, not [1][2]
        ("49 EUR [1]", "49 EUR [1][2]"),
    ]
    res = build_prefs(report, tmp_path / "data", "p")  # the default adds them
    assert (res.pairs, res.citation_pairs) == (4, 2)  # the same-file row has no wrong passage
    recs = json.loads(res.data_file.read_text())
    assert [(r["chosen"], r["rejected"]) for r in recs[2:]] == [
        ("49 EUR [1]", "49 EUR [2]"),
        ("49 EUR [1]", "49 EUR [2]"),
    ]


def test_a_wrong_number_is_wrong_however_many_words_match() -> None:
    from services.trainer.prefs_from_eval import is_correct

    ref = "Lumen & Oak was founded in 2016."
    assert not is_correct("Lumen & Oak was founded in 2018.", ref)
    assert is_correct("It was founded in 2016 [1].", ref)  # F1 0.67, the number is there
    assert is_correct("Within one business day, always.", "Within one business day.")
    assert not is_correct("Within a week.", "Within one business day.")


def test_prefs_from_eval_reports_bad_rows_by_line_and_field(tmp_path: Path) -> None:
    rows = eval_rows()
    rows[1].pop("reference")
    rows[2]["context"] = 7
    rows[3]["citation"] = 9
    report = tmp_path / "eval.jsonl"
    report.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(BadInput) as e:
        build_prefs(report, tmp_path / "out", "p")
    msg = e.value.message
    assert "3 invalid" in msg and "record 1 (line 2), field 'reference'" in msg
    assert "record 2 (line 3), field 'context'" in msg and "field 'citation'" in msg
    assert not (tmp_path / "out").exists()
    with pytest.raises(BadInput, match="does not exist"):
        build_prefs(tmp_path / "nope.jsonl", tmp_path / "out", "p")


# ---- end to end on a tiny model ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama with the real SmolLM2 tokenizer (and its chat template)."""
    tok = smollm2_tokenizer()
    d = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama(0, vocab=len(tok)).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def dpo_run(root: Path, model_dir: Path, name: str, **kw: Any) -> Any:
    from services.trainer.settings import TrainSettings
    from services.trainer.train import run_training

    recs = [
        {"instruction": f"What is {i} + {i}?", "chosen": f"{2 * i}.", "rejected": f"{2 * i + 1}?"}
        for i in range(10)
    ]
    data = write_dataset(
        root / "data", {"p": {"file_name": "p.json", "ranking": True}}, {"p.json": recs}
    )
    settings = {
        "model_name_or_path": str(model_dir),
        "stage": "dpo",
        "dataset": ["p"],
        "dataset_dir": str(data),
        "run_name": name,
        "lora_rank": 4,
        "cutoff_len": 64,
        "per_device_train_batch_size": 2,
        "learning_rate": 1e-2,
        "logging_steps": 2,
        "save_steps": 2,
        "max_steps": 4,
        "seed": 3,
        **kw,
    }
    return run_training(
        TrainConfig(**settings),
        TrainSettings(home=root / "home", threads=1),
        say=lambda _: None,
        progress=False,
    )


def read_jsonl(p: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines() if x]


def test_tiny_dpo_run_writes_rewards_final_line_and_the_sft_layout(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    res = dpo_run(tmp_path, tiny_model_dir, "tiny-dpo", val_size=2, logging_steps=1)
    out = res.output_dir
    log = read_jsonl(out / "trainer_log.jsonl")
    steps = [x for x in log if "loss" in x]
    assert [x["current_steps"] for x in steps] == [1, 2, 3, 4]
    for x in steps:
        assert x["reward"] == x["rewards/chosen"] and x["accuracy"] == x["rewards/accuracies"]
        assert {"rewards/rejected", "rewards/margins"} <= set(x)
    # step 1: the adapter is still zero, so policy == reference: loss log 2, no margin
    assert steps[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert steps[0]["rewards/margins"] == pytest.approx(0, abs=1e-5)
    final = log[-1]
    assert final["current_steps"] == 4 and "loss" not in final and final["percentage"] == 100
    for name in ("adapter_model.safetensors", "adapter_config.json", "training_loss.png"):
        assert (out / name).is_file(), name
    assert (out / "training_rewards_accuracies.png").read_bytes()[:4] == b"\x89PNG"
    evals = json.loads((out / "eval_results.json").read_text())
    assert {"eval_loss", "eval_rewards/accuracies", "eval_rewards/margins"} <= set(evals)
    meta = json.loads((res.registry_dir / "meta.json").read_text())
    assert meta["stage"] == "dpo" and meta["model_path"] == meta["adapter_path"] == str(out)
    assert meta["parameters"]["pref_loss"] == "sigmoid" and meta["base_model_path"]
    # what `llm chat|eval|export` load: base + this adapter, merged (export's merge step)
    from services.common.registry import Registry
    from services.trainer.inference import load_llm

    llm = load_llm("tiny-dpo", Registry(tmp_path / "home"))
    assert not llm.is_base and llm.record is not None and llm.record.stage == "dpo"

    # a run shorter than logging_steps still leaves its final line, with its rewards
    short = dpo_run(tmp_path / "short", tiny_model_dir, "short", logging_steps=50, max_steps=2)
    (only,) = read_jsonl(short.output_dir / "trainer_log.jsonl")
    assert only["current_steps"] == 2 and "accuracy" in only and "rewards/margins" in only


def test_dpo_resumes_after_interruption_like_sft(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import load_file

    from services.trainer.callbacks import ProgressCallback

    ref = dpo_run(tmp_path / "a", tiny_model_dir, "whole")

    def crash(self: Any, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.global_step == 3:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(ProgressCallback, "on_step_end", crash)
        with pytest.raises(KeyboardInterrupt):
            dpo_run(tmp_path / "b", tiny_model_dir, "cut")
    res = dpo_run(tmp_path / "b", tiny_model_dir, "cut", resume_from_checkpoint=True)
    assert res.resumed_from and res.resumed_from.endswith("checkpoint-2")
    order = read_jsonl(res.output_dir / "data_order.jsonl")
    assert order == read_jsonl(ref.output_dir / "data_order.jsonl")
    steps = [x["current_steps"] for x in read_jsonl(res.output_dir / "trainer_log.jsonl")]
    assert steps == [2, 4, 4]  # nothing twice; the last is the final line
    a = load_file(res.output_dir / "adapter_model.safetensors")
    b = load_file(ref.output_dir / "adapter_model.safetensors")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4


def test_kto_and_reference_free_runs(tmp_path: Path, tiny_model_dir: Path) -> None:
    from services.trainer.settings import TrainSettings
    from services.trainer.train import run_training

    recs = [
        {"instruction": f"What is {i} + {i}?", "output": f"{2 * i + i % 2}.", "ok": i % 2 == 0}
        for i in range(8)
    ]
    data = write_dataset(
        tmp_path / "k",
        {"k": {"file_name": "k.json", "columns": {"kto_tag": "ok"}}},
        {"k.json": recs},
    )
    said: list[str] = []
    common = {"model_name_or_path": str(tiny_model_dir), "max_steps": 2, "logging_steps": 1}
    common |= {"per_device_train_batch_size": 4, "cutoff_len": 64, "save_steps": 10}
    kto = run_training(
        TrainConfig(stage="kto", dataset=["k"], dataset_dir=str(data), run_name="k", **common),
        TrainSettings(home=tmp_path / "home", threads=1),
        say=said.append,
        progress=False,
    )
    log = read_jsonl(kto.output_dir / "trainer_log.jsonl")
    assert "4 desirable, 4 undesirable" in said[0] and "adapter disabled" in said[2]
    assert all("rewards/chosen" in x and "kl" not in x for x in log if "loss" in x)
    assert (kto.output_dir / "training_rewards_chosen.png").is_file()
    assert "kl" in json.loads((kto.output_dir / "trainer_state.json").read_text())["log_history"][0]

    said.clear()
    pairs = write_dataset(
        tmp_path / "p", {"p": {"file_name": "p.json", "ranking": True}}, {"p.json": PAIRS * 4}
    )
    simpo = run_training(
        TrainConfig(
            stage="dpo", pref_loss="simpo", dataset=["p"], dataset_dir=str(pairs), **common
        ),
        TrainSettings(home=tmp_path / "home", threads=1),
        say=said.append,
        progress=False,
    )
    assert not any("Reference model" in x for x in said)  # simpo needs none
    first = read_jsonl(simpo.output_dir / "trainer_log.jsonl")[0]
    assert first["rewards/chosen"] < 0 and "accuracy" in first  # beta x mean log-prob
