#!/usr/bin/env bash
# Does the tuned stack answer better? Issue 13's proof on XQuAD-en, sized for 2 CPU cores.
#
#   bench/rag_finetune_xquad.sh            (~40 min on 2 idle cores; sizes below, all overridable)
#   DISTRACTOR_ONLY=0.2 GATE=0 RUN=xquad-raft-abs bench/rag_finetune_xquad.sh   (RAFT's
#                                          abstention: 20% of the examples without the gold
#                                          passage teach "not in the documents"; no gate)
#   XQUAD=../shared/data/xquad/xquad.zh.json TUNESTACK_HOME=/tmp/rag-proof-zh DISTRACTOR_ONLY=0.2 \
#     GATE=0 STEPS=24 LIMIT=30 UNANS=10 CUTOFF=1536 EMBED_EPOCHS=1 bench/rag_finetune_xquad.sh
#                                          (Chinese, the mechanics: MiniLM is English-only)
#
# Split by article, so no question, paragraph or article is on both sides:
# - even-numbered articles: their human questions train the LLM (`llm synth --qa`: each
#   question with its gold paragraph among retrieved distractors; the serving prompt; then
#   a LoRA run), and calibrate the relevance gate of both embedders' builds (`rag
#   calibrate`: the similarity below which 5% of these questions' best passages fall);
# - odd-numbered articles: their questions are the test set (the first question of each
#   paragraph, so the first LIMIT span many articles);
# - the collection holds every paragraph except those of the last HELD_OUT odd articles,
#   whose questions are the unanswerable ones (`rag eval --unanswerable`).
# The embedder is tuned from the 240 paragraphs alone (no question), as the embedder proof
# in the README does. Both LLMs (base, tuned) x both embedders (base, tuned) answer through
# the RAG API's answer path, and the tuned LLM once more with the gate off (what the gate
# costs on answerable questions); the table at the end reads the three summaries.
# Abstention comes from the gate, not from the LLM: with DISTRACTOR_ONLY=0.2 (RAFT's
# distractor-only share) the tuned 135M model abstained on 67% of the unanswerable
# questions but also on 23% of the answerable ones, 15 points of F1 (README).
# The LoRA settings are the demo's, scaled to the data; top-k 2 at training and at
# evaluation (a step costs ~4x less than with the API's 4, and the model sees at evaluation
# the prompt it trained on); the gate's threshold comes from the training questions. One
# choice was made after seeing test figures: the gate instead of RAFT's abstention
# examples, after the run above missed the 5-point goal (both runs are in the README).
set -euo pipefail
cd "$(dirname "$0")/.."

TS=${TS:-.venv/bin/tunestack}
PY=${PY:-.venv/bin/python}
export TUNESTACK_HOME=${TUNESTACK_HOME:-/tmp/rag-proof}
# ports of their own, so a stack on the defaults (or a test run) is left alone
export TUNESTACK_API_PORT=${TUNESTACK_API_PORT:-18000} TUNESTACK_CHROMA_PORT=${TUNESTACK_CHROMA_PORT:-18001}
export TUNESTACK_LLM_PORT=${TUNESTACK_LLM_PORT:-18080} TUNESTACK_UI_PORT=${TUNESTACK_UI_PORT:-18501}
export TUNESTACK_EMBED_SERVER_PORT=${TUNESTACK_EMBED_SERVER_PORT:-18081}
export TUNESTACK_MILVUS_PORT=${TUNESTACK_MILVUS_PORT:-18530}
XQUAD=${XQUAD:-../shared/data/xquad/xquad.en.json}
Q_PER_PARA=${Q_PER_PARA:-2}  # training questions per paragraph (even articles: ~240)
STEPS=${STEPS:-60}           # LoRA steps at batch BATCH
BATCH=${BATCH:-4}
TOP_K=${TOP_K:-2}
LIMIT=${LIMIT:-60}           # answerable test questions
UNANS=${UNANS:-15}           # unanswerable ones
HELD_OUT=${HELD_OUT:-4}      # odd articles left out of the collection
MAX_TOKENS=${MAX_TOKENS:-64} # XQuAD answers are short spans; both LLMs get the same cap
EMBED_EPOCHS=${EMBED_EPOCHS:-2}
CUTOFF=${CUTOFF:-768}        # training tokens per example (Chinese takes ~2x the tokens)
DISTRACTOR_ONLY=${DISTRACTOR_ONLY:-0} # share of examples without the gold passage
GATE=${GATE:-1}              # 1: calibrate the relevance gate on the training questions
RUN=${RUN:-xquad-raft}
W=$TUNESTACK_HOME/work
mkdir -p "$W"
start=$SECONDS
phase() { echo "=== [$((SECONDS - start))s] $*"; }

phase "split $XQUAD by article"
"$PY" - "$XQUAD" "$W" "$Q_PER_PARA" "$HELD_OUT" <<'EOF'
import json, pathlib, shutil, sys
src, work, q_per_para, held_out = sys.argv[1], pathlib.Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
data = json.load(open(src, encoding="utf-8"))["data"]
train = [a for i, a in enumerate(data) if i % 2 == 0]
test = [a for i, a in enumerate(data) if i % 2 == 1]
left_out = len(data) - 2 * held_out  # the last held_out odd articles: index >= this, odd
docs = work / "docs"
shutil.rmtree(docs, ignore_errors=True)
docs.mkdir(parents=True)
for i, art in enumerate(data):
    if i % 2 == 1 and i >= left_out:
        continue
    for p, para in enumerate(art["paragraphs"]):
        (docs / f"a{i:02d}p{p:02d}.txt").write_text(para["context"], encoding="utf-8")
counts = []
for name, arts, n in (("train", train, q_per_para), ("test", test, 1)):
    kept = [{"title": a["title"], "paragraphs": [
        {"context": p["context"], "qas": p["qas"][:n]} for p in a["paragraphs"]]} for a in arts]
    counts.append(sum(len(p["qas"]) for a in kept for p in a["paragraphs"]))
    body = {"version": "1.1", "data": kept}
    (work / f"{name}.json").write_text(json.dumps(body), encoding="utf-8")
print(f"{len(train)} training articles ({counts[0]} questions), {len(test)} test articles "
      f"({counts[1]} questions, {held_out} articles not in the collection), "
      f"{len(list(docs.iterdir()))} paragraphs in the collection")
EOF

phase "stack, collection"
$TS up --mode local --no-ui
$TS ingest "$W/docs" --collection xquad

phase "embedder: tuned from the paragraphs alone"
if ! $TS models list --kind embedder --json | grep -q '"xquad-minilm"'; then
  $TS embed tune --corpus "$XQUAD" --name xquad-minilm --epochs "$EMBED_EPOCHS"
fi
$TS reindex xquad --embedder xquad-minilm

phase "LLM: RAFT-style examples from the training articles' questions, LoRA"
$TS llm synth --qa "$W/train.json" --docs "$W/docs" --top-k "$TOP_K" \
  --distractor-only "$DISTRACTOR_ONLY" --out "$W/llm-data-$RUN"
if ! $TS models list --kind llm --json | grep -q "\"$RUN\""; then
  $TS llm train --config samples/llm_sft/train_lora_smollm2.yaml run_name="$RUN" \
    dataset=rag_sft dataset_dir="$W/llm-data-$RUN" max_steps="$STEPS" \
    per_device_train_batch_size="$BATCH" cutoff_len="$CUTOFF" learning_rate=1.0e-3 \
    save_steps=20 logging_steps=5 plot_loss=true
fi

phase "relevance gate: calibrated on the training questions, never the test ones"
for e in all-minilm-l6-v2 xquad-minilm; do
  if [ "$GATE" = 1 ]; then
    $TS rag calibrate -c xquad --embedder "$e" --dataset "$W/train.json"
  else
    $TS rag calibrate -c xquad --embedder "$e" --off
  fi
done

EVAL=(--dataset "$W/test.json" -c xquad --embedder all-minilm-l6-v2 --embedder xquad-minilm
  --mode dense --top-k "$TOP_K" --max-tokens "$MAX_TOKENS" --limit "$LIMIT" --unanswerable "$UNANS")
phase "rag eval: the base LLM"
$TS rag eval "${EVAL[@]}" --llm smollm2-135m-instruct --json >"$W/base-$RUN.json"

phase "export and deploy the tuned LLM, rag eval"
$TS llm export "$RUN" --quant f16,q8_0
$TS llm deploy "$RUN" --to llamacpp --quant q8_0
$TS rag eval "${EVAL[@]}" --llm "$RUN" --json >"$W/tuned-$RUN.json"
phase "rag eval: the tuned LLM with the gate off"
$TS rag eval "${EVAL[@]}" --llm "$RUN" --min-relevance 0 --json >"$W/tuned-nogate-$RUN.json"

phase "the table (rag eval's summaries: $W/{base,tuned,tuned-nogate}-$RUN.json)"
"$PY" - "$W" "$RUN" "$TOP_K" <<'EOF'
import json, sys
w, run, k = sys.argv[1:4]
rows = [(name, r) for name in ("base", "tuned", "tuned-nogate")
        for r in json.load(open(f"{w}/{name}-{run}.json"))["grid"]]
keys = [f"hit@{k}", "f1", "em", "rouge_l", "citation_precision", "citation_recall",
        "no_citation", "faithfulness", "abstention", "false_abstention", "gated",
        "latency_p50_s", "latency_p95_s", "tokens_per_s"]
print("| LLM | embedder | gate | " + " | ".join(keys) + " |")
print("|---|---|---|" + "---|" * len(keys))
for name, r in rows:
    gate = f"{r['min_relevance']:.3f}" if r.get("min_relevance") else "off"
    cells = [f"{r[c]:.3f}" if isinstance(r.get(c), (int, float)) else "-" for c in keys]
    print(f"| {r['llm']} | {r['embedder']} | {gate} | " + " | ".join(cells) + " |")
f1 = {(name, r["embedder"]): r.get("f1") or 0.0 for name, r in rows}
base, tuned = f1[("base", "all-minilm-l6-v2")], f1[("tuned", "xquad-minilm")]
print(f"answer F1 (answerable questions): base LLM + base embedder {base:.3f}; tuned LLM + "
      f"tuned embedder {tuned:.3f}: {100 * (tuned - base):+.1f} points (goal +15, stretch +25)")
loss = f1[("tuned-nogate", "xquad-minilm")] - tuned
print(f"the gate's cost on answerable questions (tuned + tuned): {100 * loss:.1f} F1 points "
      "(goal <= 5)")
EOF
phase "done (TUNESTACK_HOME=$TUNESTACK_HOME; stop its stack with: tunestack down)"
