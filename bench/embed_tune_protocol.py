"""Choosing `embed tune --corpus` defaults without the questions they are reported on.

Two stages, each one command:

    select   For each candidate setting, run `embed tune --corpus`'s own code path on the
             passages of 80% of the set's articles (a seeded split by article), then score
             *pseudo*-questions (cloze questions: a clause with a number, date or name cut
             out and a wh-word put first) made from the other 20% of articles, which the
             run never saw, against every passage. Human questions are never read here.
    confirm  Tune on all passages of a set with the chosen defaults (exactly what a user's
             `embed tune --corpus FILE` does) and score the set's human questions: the
             figure that is reported, once, after the choice.

    X=../shared/data/xquad/xquad.en.json
    .venv/bin/python bench/embed_tune_protocol.py select  --dataset $X
    .venv/bin/python bench/embed_tune_protocol.py confirm --dataset $X
    .venv/bin/python bench/embed_tune_protocol.py confirm --dataset SQUAD2.json --exclude $X

`--exclude` drops every passage that also appears in another SQuAD file (and SQuAD 2.0's
unanswerable questions), so a second English set shares nothing with XQuAD-en; see
bench/README.md for where the second set comes from. Results go to --out as JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import peak_rss_mb

# Candidate settings: (pseudo-query method, per-passage cap, epochs, learning rate, and
# hard negatives mined with the base model per pair: `embed tune --hard-negatives`).
CANDIDATES: dict[str, dict[str, Any]] = {
    "sentences-2ep-5e-5": {"pseudo": "sentences", "per_chunk": 0, "epochs": 2.0, "lr": 5e-5},
    "sentences-1ep-5e-5": {"pseudo": "sentences", "per_chunk": 0, "epochs": 1.0, "lr": 5e-5},
    "sentences-1ep-1e-4": {"pseudo": "sentences", "per_chunk": 0, "epochs": 1.0, "lr": 1e-4},
    "mixed4-1ep-5e-5": {"pseudo": "mixed", "per_chunk": 4, "epochs": 1.0, "lr": 5e-5},
    # more passes for a small corpus (60 passages: 8 steps an epoch), as a step floor would
    "mixed4-2ep-5e-5": {"pseudo": "mixed", "per_chunk": 4, "epochs": 2.0, "lr": 5e-5},
    "mixed4-3ep-5e-5": {"pseudo": "mixed", "per_chunk": 4, "epochs": 3.0, "lr": 5e-5},
    "sentences-1ep-5e-5-hn1": {
        "pseudo": "sentences",
        "per_chunk": 0,
        "epochs": 1.0,
        "lr": 5e-5,
        "hard_negatives": 1,
    },
    "mixed4-1ep-5e-5-hn1": {
        "pseudo": "mixed",
        "per_chunk": 4,
        "epochs": 1.0,
        "lr": 5e-5,
        "hard_negatives": 1,
    },
}


def load_squad(path: Path, exclude: Path | None, articles: int = 0) -> dict[str, Any]:
    """A SQuAD file without SQuAD 2.0's unanswerable questions, and without the passages
    of `exclude`; only its first `articles` articles when > 0 (a small corpus: XQuAD-en's
    first 12 are CI's 60 paragraphs, tests/integration/test_embed_tuner_training.py)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    drop: set[str] = set()
    if exclude is not None:
        ex = json.loads(exclude.read_text(encoding="utf-8"))
        drop = {p["context"].strip() for a in ex["data"] for p in a["paragraphs"]}
    kept = []
    for a in data["data"][: articles or None]:
        paras = []
        for p in a["paragraphs"]:
            if p["context"].strip() in drop:
                continue
            qas = [q for q in p.get("qas", []) if not q.get("is_impossible")]
            paras.append({"context": p["context"], "qas": qas})
        if paras:
            kept.append({"title": a.get("title", ""), "paragraphs": paras})
    return {"version": "1.1", "data": kept}


def cloze_queries(passages: dict[str, str], seed: int) -> dict[str, list[str]]:
    from services.embed_tuner.pseudo_queries import clauses, cloze_question, sentences

    rng = random.Random(seed)
    out: dict[str, list[str]] = {}
    for pid, text in passages.items():
        qs = [q for s in sentences(text) for c in clauses(s) if (q := cloze_question(c, rng))]
        out[pid] = rng.sample(qs, min(3, len(qs)))
    return out


def tune_on(passages: dict[str, str], setting: dict[str, Any], home: Path, name: str) -> dict:
    """`embed tune --corpus` on these passages with `setting` as the defaults."""
    from services.common.registry import Registry
    from services.embed_tuner.service import SynthRequest, TuneRequest, tune_embedder
    from services.embed_tuner.settings import EmbedSettings

    corpus = home / f"{name}.jsonl"
    corpus.write_text(
        "".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in passages.items()),
        encoding="utf-8",
    )
    s = EmbedSettings(
        home=home,
        **{k: v for k, v in setting.items() if k in ("per_chunk", "epochs", "lr")},
    )
    synth = SynthRequest(corpus=corpus, pseudo=setting.get("pseudo", "sentences"))
    from tqdm import tqdm

    bar = tqdm(desc=name, unit="step")

    def progress(done: int, total: int, note: str) -> None:
        if note.startswith("loss") or not note:  # training steps (synthesis reports too)
            bar.total = total
            bar.update(done - bar.n)
            bar.set_postfix_str(note)

    t = time.perf_counter()
    req = TuneRequest(name=name, synth=synth, hard_negatives=setting.get("hard_negatives", 0))
    entry = tune_embedder(s, Registry(home), req, progress)
    seconds = time.perf_counter() - t
    bar.close()
    steps = entry.record.metrics.get("trained_steps") or [0, 0]
    return {"seconds": round(seconds, 1), "steps": steps[1]}


def tune_without(
    full: dict[str, str], held: dict[str, str], setting: dict[str, Any], home: Path, name: str
) -> dict:
    """Like `tune_on(full, ...)`, except that no training query comes from the held-out
    sentence of a passage (`held[pid]`): queries are made from the passage without it,
    positives are the whole passage. Same synthesis, 10% validation split and trainer."""
    from services.common.qa import split_queries
    from services.common.registry import Registry
    from services.embed_tuner.pseudo_queries import pseudo_queries
    from services.embed_tuner.service import TuneRequest, tune_embedder
    from services.embed_tuner.settings import EmbedSettings
    from services.embed_tuner.synth import to_dataset

    reduced = {
        pid: text.replace(held[pid], " ") if pid in held else text for pid, text in full.items()
    }
    qs = pseudo_queries(reduced, setting["per_chunk"], seed=0, method=setting["pseudo"])
    train, val = split_queries(to_dataset(full, qs), 0.1, 0)
    train.save(home / f"{name}.train.json")
    val.save(home / f"{name}.val.json")
    s = EmbedSettings(home=home)
    req = TuneRequest(
        name=name,
        pairs=home / f"{name}.train.json",
        val=home / f"{name}.val.json",
        epochs=setting["epochs"],
        lr=setting["lr"],
        hard_negatives=setting.get("hard_negatives", 0),
    )
    t = time.perf_counter()
    entry = tune_embedder(s, Registry(home), req)
    steps = entry.record.metrics.get("trained_steps") or [0, 0]
    return {"seconds": round(time.perf_counter() - t, 1), "steps": steps[1]}


def scores(ds: Any, home: Path, names: list[str]) -> dict[str, dict[str, float]]:
    from services.common.embedders import EmbedderPool
    from services.common.ir_eval import evaluate
    from services.common.registry import Registry

    pool = EmbedderPool(Registry(home), capacity=1)
    return {n: evaluate(ds, pool.get(n), 10) for n in names}


def reduction(base: dict, tuned: dict) -> float:
    from services.common.ir_eval import error_reduction

    return round(100 * error_reduction(base, tuned), 1)


def select(args: argparse.Namespace) -> dict:
    from services.common.qa import QADataset, squad_to_qa
    from services.common.registry import Registry

    full = squad_to_qa(load_squad(args.dataset, args.exclude, args.articles))
    rng = random.Random(args.seed)
    held_sentence: dict[str, str] = {}
    if args.holdout == "articles":
        articles = sorted({pid[:4] for pid in full.corpus})
        rng.shuffle(articles)
        held = set(articles[: max(1, round(len(articles) * 0.2))])
        train = {k: v for k, v in full.corpus.items() if k[:4] not in held}
        val_q = cloze_queries({k: v for k, v in full.corpus.items() if k[:4] in held}, args.seed)
        where = f"{len(held)} held-out articles ({len(train)} training passages)"
    else:  # one sentence per passage: its passage is trained on, its questions are not
        from services.embed_tuner.pseudo_queries import sentences

        train = full.corpus
        val_q = {}
        for pid, text in sorted(full.corpus.items()):
            sents = [x for x in sentences(text) if cloze_queries({pid: x}, args.seed)[pid]]
            if len(sents) >= 2:
                held_sentence[pid] = rng.choice(sents)
                val_q[pid] = cloze_queries({pid: held_sentence[pid]}, args.seed)[pid]
        where = f"one held-out sentence in each of {len(held_sentence)} passages"
    queries = {f"{pid}c{i}": q for pid, qs in val_q.items() for i, q in enumerate(qs)}
    rel = {qid: [qid.split("c")[0]] for qid in queries}
    val = QADataset(queries, full.corpus, rel, f"cloze pseudo-questions, {where}")
    print(f"{len(queries)} cloze pseudo-questions over {len(full.corpus)} passages; {where}")
    home = Path(tempfile.mkdtemp(prefix="tune-select-"))
    Registry(home).ensure("embedder", "all-minilm-l6-v2")
    base = scores(val, home, ["all-minilm-l6-v2"])["all-minilm-l6-v2"]
    rows = {"base": {"mrr@10": round(base["mrr@10"], 4)}}
    for name in args.candidates:
        setting = CANDIDATES[name]
        run = (
            tune_without(full.corpus, held_sentence, setting, home, name)
            if held_sentence
            else tune_on(train, setting, home, name)
        )
        tuned = scores(val, home, [name])[name]
        rows[name] = {
            "mrr@10": round(tuned["mrr@10"], 4),
            "error_reduction_pct": reduction(base, tuned),
            "seconds": run["seconds"],
            "steps": run["steps"],
        }
        print(json.dumps({name: rows[name]}), flush=True)
    return {"stage": "select", "validation": val.source, "rows": rows}


def confirm(args: argparse.Namespace) -> dict:
    from services.common.qa import squad_to_qa
    from services.common.registry import Registry

    ds = squad_to_qa(load_squad(args.dataset, args.exclude, args.articles))
    home = Path(tempfile.mkdtemp(prefix="tune-confirm-"))
    Registry(home).ensure("embedder", "all-minilm-l6-v2")
    setting = CANDIDATES[args.setting] if args.setting else {}
    run = tune_on(ds.corpus, setting, home, "tuned")
    got = scores(ds, home, ["all-minilm-l6-v2", "tuned"])
    base, tuned = got["all-minilm-l6-v2"], got["tuned"]
    return {
        "stage": "confirm",
        "dataset": args.dataset.name,
        "passages": len(ds.corpus),
        "human_questions": len(ds.queries),
        "setting": args.setting or "defaults",
        "base_mrr@10": round(base["mrr@10"], 4),
        "tuned_mrr@10": round(tuned["mrr@10"], 4),
        "error_reduction_pct": reduction(base, tuned),
        "tune_seconds": run["seconds"],
        "steps": run["steps"],
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("stage", choices=("select", "confirm"))
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--exclude", type=Path)
    ap.add_argument("--candidates", nargs="*", default=list(CANDIDATES))
    ap.add_argument("--setting", choices=list(CANDIDATES), help="confirm: instead of defaults")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--articles", type=int, default=0, help="only the first N articles")
    ap.add_argument(
        "--holdout",
        choices=("articles", "sentences"),
        default="articles",
        help="select: validate on unseen articles, or on unseen sentences of trained passages",
    )
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    result = select(args) if args.stage == "select" else confirm(args)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
