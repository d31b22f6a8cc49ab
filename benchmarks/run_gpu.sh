#!/usr/bin/env bash
# The GPU figures and CUDA tests in one go, results and logs under OUTDIR (default
# benchmarks/results). Each step has its own time limit and a failed step does not stop the
# rest; the exit status is the number of failed steps.
#
#   bash benchmarks/run_gpu.sh [OUTDIR] [steps...]      steps: sampler train tests torchrun
#   (not by default: sampler_small, finetune_profile)
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${1:-benchmarks/results}
shift || true
STEPS=${*:-sampler train tests torchrun}
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1
failed=0
step() {  # step NAME SECONDS CMD...
  local name=$1 limit=$2
  shift 2
  echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*"
  local start=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$OUTDIR/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: rc=$rc in $((SECONDS - start))s"
  [ "$rc" -eq 0 ] || failed=$((failed + 1))
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, torch_geometric, open_clip; print('torch', torch.__version__, 'pyg', torch_geometric.__version__, 'open_clip', open_clip.__version__, torch.cuda.get_device_name())"

for s in $STEPS; do
  case $s in
    sampler)
      step sampler_gpu 240 python3 benchmarks/bench_sampler.py --device cuda --products 1000000 --edges 20000000 \
        --batch-size 262144 --out "$OUTDIR/sampler_gpu.json" ;;
    sampler_small)
      step sampler_gpu_16k 150 python3 benchmarks/bench_sampler.py --device cuda --products 1000000 --edges 20000000 \
        --out "$OUTDIR/sampler_gpu_16k.json" ;;
    train)
      step train_gpu_frozen 150 python3 benchmarks/bench_train.py --device cuda --products 200000 --batch 2048 \
        --steps 20 --warmup 3 --ft-backbones "" --out "$OUTDIR/train_gpu_frozen.json"
      step train_gpu 300 python3 benchmarks/bench_train.py --device cuda --products 200000 --batch 1024 --steps 20 \
        --warmup 3 --ft-backbones tiny,clip_b32 --ft-products 4096 --ft-batch 128 --ft-steps 10 --ft-warmup 2 \
        --trainable-last-blocks 12 --out "$OUTDIR/train_gpu.json" ;;
    finetune_profile)
      # Where the fine-tune step's time goes, RCML vs CLIP (target: RCML >= 0.95x CLIP products/s).
      step train_gpu_finetune_profile 400 python3 benchmarks/bench_train.py --device cuda --skip-frozen --products 1000 \
        --ft-backbones clip_b32 --ft-products 2048 --ft-batch 128 --ft-steps 6 --ft-warmup 2 --trainable-last-blocks 12 \
        --sdpa-backends EFFICIENT_ATTENTION,MATH --profile 2 --out "$OUTDIR/train_gpu_finetune_profile.json" ;;
    tests)
      step tests_gpu 400 python3 -m pytest -m gpu -q -p no:cacheprovider ;;
    torchrun)
      tmp=$(mktemp -d)
      step torchrun_build 200 python3 scripts/build_graph.py domain=demo "paths.data_root=$tmp" \
        domain.generator.num_products=400 domain.generator.image_size=64 show_progress=false
      step torchrun_features 200 python3 -m rcml_graph.features domain=demo "paths.data_root=$tmp" model=tiny \
        features.num_workers=0 show_progress=false
      step torchrun_train 200 torchrun --standalone --nproc_per_node=1 -m rcml_graph.train domain=demo \
        "paths.data_root=$tmp" "paths.runs_root=$tmp/runs" model=tiny train=debug train.device=cuda show_progress=false ;;
  esac
done
echo "failed steps: $failed"
exit "$failed"
