#!/usr/bin/env bash
# Train and evaluate demo runs one after another, each summarised in one line (average-mode Hit@5,
# paper and relation-sensitive protocols, by relation kind); results.json files are copied to OUTDIR.
# Builds the demo graph, images and offline token features first when DATA_ROOT lacks them.
# Rerunning a command after a kill resumes it: interrupted runs continue from their last epoch.
#
#   bash scripts/demo_runs.sh OUTDIR NAME:EXPERIMENT:SEED:EPOCHS[:override,override...] ...
#   e.g. bash scripts/demo_runs.sh /tmp/out rcml_e15:rcml:0:15 unconditioned_e15:unconditioned:0:15
#
# Environment: RCML_DATA_ROOT (default /tmp/d), RCML_RUNS_ROOT (default /tmp/runs),
# EVAL_DEVICE (default cuda when available). Settings common to every run are in COMMON below
# (the docs/results.md session-6 protocol; session 5 used train.hard_negatives=4, pass it as an override).
set -u
OUTD=${1:?usage: demo_runs.sh OUTDIR NAME:EXPERIMENT:SEED:EPOCHS[:overrides] ...}; shift
mkdir -p "$OUTD"
export RCML_DATA_ROOT=${RCML_DATA_ROOT:-/tmp/d} RCML_RUNS_ROOT=${RCML_RUNS_ROOT:-/tmp/runs} PYTHONUNBUFFERED=1
EVAL_DEVICE=${EVAL_DEVICE:-$(python3 -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")}
L=$RCML_RUNS_ROOT/logs
EVAL_ROOT=$RCML_RUNS_ROOT/eval
mkdir -p "$L"
T0=$SECONDS
if [ ! -f "$RCML_DATA_ROOT/demo/features.done" ]; then
  python3 scripts/build_graph.py domain=demo show_progress=false > "$L/build.log" 2>&1 || { tail -20 "$L/build.log"; exit 1; }
  python3 scripts/download_images.py domain=demo show_progress=false > "$L/images.log" 2>&1 || { tail -20 "$L/images.log"; exit 1; }
  python3 -m rcml_graph.features domain=demo features.num_workers=8 show_progress=false > "$L/features.log" 2>&1 || { tail -20 "$L/features.log"; exit 1; }
  touch "$RCML_DATA_ROOT/demo/features.done"; echo "graph, images, features: $((SECONDS-T0))s"
fi
COMMON="train.batch_size=256 train.hard_negatives=8 train.random_negatives=8 train.warmup_steps=10 train.val_max_queries=500 train.patience=null train.compile_loss=false show_progress=false"
failed=0
for spec in "$@"; do
  IFS=: read -r name exp seed epochs extra <<< "$spec"
  t=$SECONDS
  run=$RCML_RUNS_ROOT/$name
  # Rerunning the same command resumes: a finished run (metrics.json) is not retrained, an
  # interrupted one continues from its last epoch (train.resume=latest), an evaluated one is skipped.
  # A run folder made by another spec (experiment, seed, epochs, overrides) is refused, not reused.
  spec_line="$exp:$seed:$epochs:$extra $COMMON"
  if [ -f "$run/spec" ] && [ "$(cat "$run/spec")" != "$spec_line" ]; then
    echo "$name: $run was made by '$(cat "$run/spec")', not '$spec_line'; use another NAME or remove it"
    failed=$((failed+1)); continue
  fi
  mkdir -p "$run" && { [ -f "$run/spec" ] || echo "$spec_line" > "$run/spec"; }
  if [ -f "$EVAL_ROOT/$name/results.json" ] && [ -f "$run/metrics.json" ]; then
    echo "$name: already trained and evaluated"; cp "$EVAL_ROOT/$name/results.json" "$OUTD/$name.json"; continue
  fi
  resume=""
  [ -f "$run/checkpoints/last.pt" ] && resume="train.resume=latest"
  if [ ! -f "$run/metrics.json" ]; then
    # shellcheck disable=SC2086  # COMMON, the overrides and resume are word lists
    python3 -m rcml_graph.train "experiment=$exp" "train.seed=$seed" "train.epochs=$epochs" "train.run_dir=$run" \
      $COMMON ${extra//,/ } $resume >> "$L/train_$name.log" 2>&1 || { echo "train $name failed"; tail -15 "$L/train_$name.log"; failed=$((failed+1)); continue; }
  fi
  python3 -m rcml_graph.evaluate "eval.checkpoints=[$RCML_RUNS_ROOT/$name/checkpoints/best.pt]" "eval.seeds=[$seed]" \
    "eval.device=$EVAL_DEVICE" eval.zero_shot=false eval.max_queries=500 eval.full_corpus_queries=100 eval.max_train_edges=1000 \
    "eval.output_dir=$EVAL_ROOT/$name" show_progress=false > "$L/eval_$name.log" 2>&1 || { echo "eval $name failed"; tail -15 "$L/eval_$name.log"; failed=$((failed+1)); continue; }
  cp "$EVAL_ROOT/$name/results.json" "$OUTD/$name.json"
  python3 - "$EVAL_ROOT/$name/results.json" "$RCML_RUNS_ROOT/$name/metrics.json" "$name" "$((SECONDS-t))" <<'PY'
import json, sys
results, metrics, name, seconds = sys.argv[1:]
pick = {}
for r in json.load(open(results))["rows"]:
    if r["task"] in ("retrieval", "retrieval_sensitive") and r.get("mode") == "avg" and r["metric"] == "hit@5":
        pick[f"{r['protocol']}/{r['subset']}"] = round(r["value"], 3)
best = json.load(open(metrics)).get("best/val/hit@5")
print(name, f"{seconds}s", "best val hit@5", best, pick, flush=True)
PY
done
echo "total $((SECONDS-T0))s, failed runs: $failed"
exit "$failed"
