#!/usr/bin/env bash
# The magazines link-prediction tuning fixed in docs/linkpred.md ("Next step, fixed now"): each
# source's link-predictor cell (lr x hidden x dropout) is chosen on seeds 0-2 validation HeaRT MRR,
# then run on seeds 0-9. Two subcommands, both resumable (rerun the same line after a kill):
#
#   bash scripts/linkpred_tune.sh train SEED...          # checkpoints + exports: clip_c once, rcml/unconditioned e10 per seed
#   bash scripts/linkpred_tune.sh grid SOURCE SEED...    # every cell of SOURCE (rcml|unconditioned|clip|backbone) on SEEDs
#
# train skips a run whose export exists (a killed training resumes from its last checkpoint);
# grid runs with linkpred.resume=true, so finished (cell, seed) runs are skipped. Each source keeps
# its model, training negatives and pair score from the ten-seed section; the checkpoint of
# rcml/unconditioned seed s is used with link-prediction seed s. Each source's multirun folder is
# runs/magazines/linkpred_tune/<source>/<job> (one job per cell), so grids running at once do not share one.
# Environment: RES (rows; default results/linkpred_tune), EXPORTS (default runs/magazines/emb),
# CELLS (the grid as Hydra sweep overrides; the final phase passes one chosen cell), CHECKPOINT_OFFSET
# (default 0: link-prediction seed s of rcml/unconditioned reads checkpoint seed s - CHECKPOINT_OFFSET,
# so fresh link-prediction seeds can reuse trained checkpoints, e.g. 10 for seeds 10-19), EXPERIMENTS
# (what train trains per seed; default "rcml unconditioned"), DEVICE (link prediction and export;
# default cpu; training takes CUDA when there is one). Independent grids may run at once, e.g.
#   for s in rcml unconditioned clip backbone; do bash scripts/linkpred_tune.sh grid $s 0 1 2 & done; wait
set -euo pipefail
RES=${RES:-results/linkpred_tune}
EXPORTS=${EXPORTS:-runs/magazines/emb}
CELLS=${CELLS:-linkpred.hidden_channels=64,256 linkpred.lr=0.01,0.003,0.001 linkpred.dropout=0.0,0.3}
RUNS=${RCML_RUNS_ROOT:-runs}/magazines
EXPERIMENTS=${EXPERIMENTS:-rcml unconditioned}
DEVICE=${DEVICE:-cpu}
CHECKPOINT_OFFSET=${CHECKPOINT_OFFSET:-0}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} PYTHONUNBUFFERED=1
COMMON="domain=magazines train.batch_size=256 train.hard_negatives=8 train.random_negatives=8 train.warmup_steps=10 train.val_max_queries=500 show_progress=false"

stamp() { echo "$(date -u +%FT%TZ) $*"; }

train_one() {  # NAME EXPERIMENT OVERRIDES...
  local name=$1 experiment=$2; shift 2
  if [ -f "$EXPORTS/$name/manifest.json" ]; then stamp "skip $name (exported)"; return; fi
  local resume=null t=$SECONDS
  if [ -f "$RUNS/$name/checkpoints/last.pt" ]; then resume=latest; fi
  # shellcheck disable=SC2086  # COMMON is a word list
  python -m rcml_graph.train "experiment=$experiment" "train.run_dir=$RUNS/$name" "train.resume=$resume" $COMMON "$@"
  python -m rcml_graph.embed domain=magazines "checkpoint=$RUNS/$name/checkpoints/best.pt" "embed.output_dir=$EXPORTS/$name" "embed.device=$DEVICE"
  stamp "DONE $name $((SECONDS - t)) s"
}

case "${1:-}" in
  train)
    shift
    train_one clip_c clip train.epochs=20 train.patience=null
    for seed in "$@"; do
      for experiment in $EXPERIMENTS; do
        train_one "${experiment}_e10_s$seed" "$experiment" "train.seed=$seed" train.epochs=10 train.patience=3
      done
    done ;;
  grid)
    source=${2:?usage: linkpred_tune.sh grid SOURCE SEED...}; shift 2
    [ $# -gt 0 ] || { echo "give the seeds, e.g. 0 1 2" >&2; exit 2; }
    case $source in
      rcml) setting="linkpred.train_negatives=uniform linkpred.pair_score=cosine" ;;
      unconditioned) setting="linkpred.train_negatives=heart linkpred.pair_score=cosine" ;;
      clip) setting="linkpred.train_negatives=uniform linkpred.pair_score=none linkpred.checkpoint=$EXPORTS/clip_c" ;;
      backbone) setting="linkpred.train_negatives=uniform linkpred.pair_score=cosine" ;;
      *) echo "unknown source '$source'; accepted: rcml, unconditioned, clip, backbone" >&2; exit 2 ;;
    esac
    LP="python -m rcml_graph.linkpred -m domain=magazines linkpred.features=$source linkpred.results_dir=$RES linkpred.models=[sage] linkpred.resume=true linkpred.device=$DEVICE hydra.sweep.dir=$RUNS/linkpred_tune/$source"
    for seed in "$@"; do  # every seed checked before any run: a bad one must not surface hours in
      [[ $seed =~ ^[0-9]+$ ]] || { echo "seed '$seed' is not a non-negative integer" >&2; exit 2; }
    done
    if [ "$source" = rcml ] || [ "$source" = unconditioned ]; then
      [[ $CHECKPOINT_OFFSET =~ ^[0-9]+$ ]] || { echo "CHECKPOINT_OFFSET '$CHECKPOINT_OFFSET' is not a non-negative integer" >&2; exit 2; }
      for seed in "$@"; do
        ckpt=$((10#$seed - 10#$CHECKPOINT_OFFSET))  # 10#: "08" is eight, not an octal error
        if [ "$ckpt" -lt 0 ]; then echo "seed $seed - CHECKPOINT_OFFSET $CHECKPOINT_OFFSET is below 0" >&2; exit 2; fi
        if [ ! -f "$EXPORTS/${source}_e10_s$ckpt/manifest.json" ]; then
          echo "seed $seed reads checkpoint seed $ckpt (CHECKPOINT_OFFSET=$CHECKPOINT_OFFSET): no export" \
               "$EXPORTS/${source}_e10_s$ckpt; train it first (linkpred_tune.sh train $ckpt)" >&2
          exit 2
        fi
      done
      for seed in "$@"; do  # one checkpoint per seed
        t=$SECONDS ckpt=$((10#$seed - 10#$CHECKPOINT_OFFSET))
        # shellcheck disable=SC2086  # word lists
        $LP $setting "linkpred.checkpoint=$EXPORTS/${source}_e10_s$ckpt" "linkpred.seeds=[$seed]" $CELLS
        stamp "DONE grid $source seed $seed (checkpoint seed $ckpt) $((SECONDS - t)) s"
      done
    else
      t=$SECONDS
      seeds=$(IFS=,; echo "$*")
      # shellcheck disable=SC2086
      $LP $setting "linkpred.seeds=[$seeds]" $CELLS
      stamp "DONE grid $source seeds $* $((SECONDS - t)) s"
    fi ;;
  *) echo "usage: linkpred_tune.sh train SEED... | grid SOURCE SEED..." >&2; exit 2 ;;
esac
