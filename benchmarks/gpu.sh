#!/usr/bin/env bash
# The GPU benchmarks, on any CUDA machine with jaxdann's dependencies installed
# (`pip install -e '.[convert,cuda12]'` or `'.[convert,cuda13]'`; torch for --compare-torch).
# Run from the repository root:
#
#   bash benchmarks/gpu.sh [--out DIR] [--scratch DIR] [--timeout S] [PART ...]
#
# PART (default: all):
#   step   train_step.py: float32 against the seed-style torch step (B=256, 224 px), bfloat16
#          with --breakdown at B=256 and 512, AlexNet's computation variants (--stem,
#          --pool-gradient) in bfloat16 at B=256, and a --profile of the bfloat16 step at B=256
#   demo   the embedded demo, `python -m jaxdann.train` (60 epochs), timed
#   seed   seed_experiment.py: the whole seed experiment, 30 epochs (photo and art_painting)
#   all    step, demo and seed
#   resnet train_step.py --arch resnet50 at 128 + 128, 224 px, against TLlib's torch step: float32,
#          then bfloat16 (torch under autocast), each with its MFU
#   methods method_steps.py at AlexNet's size (64 + 64, 224 px): every method's step against
#          DANN's, and CDAN+E and MCD against TLlib-style torch steps
#   grid   the seed's grid, 18 cells x 25 epochs from random init (all four domains), and its table
#   pairs  all 12 PACS pairs x 2 adaptations x 3 seeds, 8 epochs, no checkpoints (all four domains);
#          rerun with the same --scratch to continue: finished runs are skipped
#
# PACS is read from $JAXDANN_PACS_ROOT (default ../shared/data/PACS). Each command's whole output
# goes to its file in --out (default gpu_out): env.txt, step_f32.txt, step_bf16_b256.txt,
# step_bf16_b512.txt, step_bf16_variants.txt, profile_bf16_b256.txt, demo.txt,
# seed_experiment.txt, resnet50_f32.txt, resnet50_bf16.txt, methods.txt, grid.log (+ results.csv, figures, the report), pairs.log (+ pairs.md,
# pairs_runs.csv). Run folders, caches and traces go to --scratch (default $TMPDIR/jaxdann_gpu).
# Each command may run --timeout seconds (default 900; grid and pairs have no limit); a failure or
# a timeout is written into its file and makes the exit status 1. Exit status 2: bad arguments.
# tests/test_gpu.py runs `all` on the CPU at toy sizes.
set -uo pipefail

usage="usage: bash benchmarks/gpu.sh [--out DIR] [--scratch DIR] [--timeout S] [step|demo|seed|all|resnet|methods|grid|pairs ...]"
out=gpu_out
tmp=${TMPDIR:-/tmp}/jaxdann_gpu
limit=900
parts=()
while [ $# -gt 0 ]; do
  case "$1" in
  --out | --scratch | --timeout)
    if [ $# -lt 2 ]; then
      echo "$1 needs a value; $usage"
      exit 2
    fi
    case "$1" in
    --out) out=$2 ;;
    --scratch) tmp=$2 ;;
    --timeout) limit=$2 ;;
    esac
    shift 2
    ;;
  -h | --help)
    echo "$usage"
    exit 0
    ;;
  step | demo | seed | all | resnet | methods | grid | pairs)
    parts+=("$1")
    shift
    ;;
  *)
    echo "unknown part '$1': step, demo, seed, all, resnet, methods, grid or pairs; $usage"
    exit 2
    ;;
  esac
done
[ ${#parts[@]} -gt 0 ] || parts=(all)
if ! [[ $limit =~ ^[0-9]+$ ]] || [ "$limit" = 0 ]; then
  echo "--timeout takes a positive number of seconds, not '$limit'"
  exit 2
fi
if [ ! -f benchmarks/train_step.py ]; then
  echo "run benchmarks/gpu.sh from the repository root"
  exit 2
fi
root=${JAXDANN_PACS_ROOT:-../shared/data/PACS}
mkdir -p "$out" "$tmp"
export PYTHONUNBUFFERED=1
unset JAX_COMPILATION_CACHE_DIR # only step uses one: the demo and seed compile cold, as a user's runs do

rc=0
# logged FILE SECONDS LINES COMMAND...: COMMAND's whole output goes to FILE (tracebacks too), its
# last LINES to the terminal. It may run SECONDS at most (0: no limit); a failure or a timeout
# (exit 124) is written into FILE and into this script's exit status.
logged() {
  local file=$1 seconds=$2 lines=$3
  shift 3
  timeout "$seconds" "$@" 2>&1 | tee -a "$file" | tail -n "$lines"
  local code=${PIPESTATUS[0]}
  if [ "$code" != 0 ]; then
    echo "exit $code: $*" | tee -a "$file"
    rc=1
  fi
}

# has_domains NAME...: true if every PACS domain named is a folder under $root; else says which not.
has_domains() {
  local domain
  for domain in "$@"; do
    if [ ! -d "$root/$domain" ]; then
      echo "no PACS domain $domain in $root (set JAXDANN_PACS_ROOT): skipped"
      rc=1
      return 1
    fi
  done
}

environment() {
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/env.txt"
  else
    echo "nvidia-smi not found" | tee "$out/env.txt"
  fi
  logged "$out/env.txt" 120 1 python3 -c "import jax, flax, optax, torch; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'optax', optax.__version__, 'torch', torch.__version__)"
}

step() {
  # The compilation cache (these runs only) lets later runs reuse XLA's autotuning, and the
  # profile run the B=256 bfloat16 step's executable.
  local -x JAX_COMPILATION_CACHE_DIR=$tmp/jax_cache_step
  rm -rf "$tmp/prof_bf16"
  local bench="python3 benchmarks/train_step.py --image-size 224 --steps 20 --warmup 3"
  logged "$out/step_f32.txt" "$limit" 3 $bench --batch-size 256 --compare-torch
  for batch in 256 512; do
    logged "$out/step_bf16_b$batch.txt" "$limit" 2 $bench --batch-size $batch --dtype bfloat16 --breakdown
  done
  # AlexNet's computation variants (the same function and parameters), one JSON line each.
  for variant in "--stem space_to_depth" "--pool-gradient xla" "--stem space_to_depth --pool-gradient xla"; do
    logged "$out/step_bf16_variants.txt" "$limit" 1 $bench --batch-size 256 --dtype bfloat16 $variant
  done
  # The largest GPU kernels per step (self time); its 20 timed steps are a second run of the
  # default, the noise floor for the variants above.
  logged "$out/profile_bf16_b256.txt" "$limit" 24 $bench --batch-size 256 --dtype bfloat16 --profile "$tmp/prof_bf16"
}

resnet() {
  local -x JAX_COMPILATION_CACHE_DIR=$tmp/jax_cache_step
  local bench="python3 benchmarks/train_step.py --arch resnet50 --batch-size 128 --image-size 224"
  bench="$bench --steps 20 --warmup 3 --compare-torch"
  logged "$out/resnet50_f32.txt" "$limit" 3 $bench
  logged "$out/resnet50_bf16.txt" "$limit" 3 $bench --dtype bfloat16
}

methods() {
  logged "$out/methods.txt" "$limit" 16 python3 benchmarks/method_steps.py --arch alexnet \
    --batch-size 64 --image-size 224 --steps 20 --compare-torch
}

demo() {
  rm -rf "$tmp/demo"
  logged "$out/demo.txt" "$limit" 5 bash -c "time python3 -m jaxdann.train --workdir '$tmp/demo'"
}

seed() {
  has_domains photo art_painting || return
  logged "$out/seed_experiment.txt" "$limit" 3 python3 benchmarks/seed_experiment.py --root "$root" \
    --epochs 30 --config.checkpoint_every_epochs=10
}

grid() {
  has_domains photo art_painting cartoon sketch || return
  logged "$out/grid.log" 0 5 bash -c "time python3 -m jaxdann.sweep --config configs/pacs_dann.py \
    --workdir '$tmp/grid' --learning_rates 0.01,0.001,0.00001 --optimizers sgd,adam,rmsprop \
    --adaptations none,dann --config.data.root='$root' --config.model.pretrained=none \
    --config.epochs=25 --config.checkpoint_every_epochs=25 --config.log_every_epoch=false"
  cp "$tmp"/grid/results.csv "$tmp"/grid/heatmap_validation_*.png "$tmp"/grid/best_curves_*.png "$out/" 2>/dev/null
  logged "$out/grid.log" "$limit" 10 python3 -m jaxdann.report "$tmp/grid" --output "$out"
}

pairs() {
  has_domains photo art_painting cartoon sketch || return
  logged "$out/pairs.log" 0 25 bash -c "time python3 -m jaxdann.pairs --config configs/pacs_dann.py \
    --workdir '$tmp/pairs' --seeds 0,1,2 --config.data.root='$root' \
    --config.model.pretrained=none --config.epochs=8 --config.checkpoint_every_epochs=0 \
    --config.log_every_epoch=false"
  cp "$tmp/pairs/pairs.md" "$tmp/pairs/pairs_runs.csv" "$out/" 2>/dev/null
}

environment
for part in "${parts[@]}"; do
  case "$part" in
  all)
    step
    demo
    seed
    ;;
  *) "$part" ;;
  esac
done
exit $rc
