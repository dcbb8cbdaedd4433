"""`tunestack embed mteb` (issue 15, part 3): the user's QA set as a custom MTEB retrieval
task, run by the `mteb` package itself, with no hub download. Its NDCG@10 must equal
`embed eval`'s on the same data for every model (MTEB rounds to 5 decimals), including
one that embeds queries and passages differently (multilingual-e5), so the query/passage
mapping is checked too."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import shared_data
from tests.integration.conftest import Stack
from tests.integration.test_embed_tuner import small_squad

MODELS = ("all-minilm-l6-v2", "multilingual-e5-small")


def test_mteb_ndcg_equals_embed_eval_and_writes_mteb_result_files(
    stack: Stack, tmp_path: Path
) -> None:
    data = small_squad(shared_data("xquad", "xquad.en.json"), tmp_path / "xq.json", 5)
    args = [a for m in MODELS for a in ("--model", m)]
    out = tmp_path / "mteb"
    r = stack.cli("embed", "mteb", "--dataset", str(data), *args, "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "TunestackXqRetrieval"

    ours_json = tmp_path / "ours.json"
    r = stack.cli("embed", "eval", "--dataset", str(data), *args, "--json", str(ours_json))
    assert r.returncode == 0, r.stdout + r.stderr
    ours = json.loads(ours_json.read_text())["models"]
    for m in MODELS:
        mteb_scores = summary["models"][m]
        assert abs(mteb_scores["ndcg_at_10"] - ours[m]["ndcg@10"]) <= 1e-5, (m, mteb_scores)
        assert abs(mteb_scores["mrr_at_10"] - ours[m]["mrr@10"]) <= 1e-5, (m, mteb_scores)
        fp = json.loads((stack.home / f"models/embedders/{m}/meta.json").read_text())
        result = out / "results" / f"tunestack__{m}" / fp["fingerprint"][:16]
        task = json.loads((result / "TunestackXqRetrieval.json").read_text())
        assert task["task_name"] == "TunestackXqRetrieval"
        assert task["scores"]["test"][0]["main_score"] == mteb_scores["ndcg_at_10"]
