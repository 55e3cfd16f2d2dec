#!/usr/bin/env bash
# What a lent GPU runs, in as few calls as possible. A call carries at most 64 MiB (one PACS
# domain: photo 43 MB, art_painting 55 MB, cartoon 46 MB, sketch 60 MB) into the git-ignored
# .data/PACS/<domain>, which stays on the machine only while it is warm: 30 s after a call ends.
# The 15-minute plan (prepare both calls before the first; send the second at once, unread):
#   1. carry .whl .data/PACS/photo:        bash benchmarks/gpu_session.sh hold   (the machine start)
#   2. carry .whl .data/PACS/art_painting: bash benchmarks/gpu_session.sh all    (timeout_s 540)
#      = step (env, f32 vs torch, bf16 B=256/512 with --breakdown, the bf16 variants, a profile,
#      the demo; about 4-5 min) then seed (the seed experiment, about 1 min), 8 result files.
#      If the machine went cold in between, step still runs and seed says photo is missing.
# Parts: step | seed | all | hold | grid (+ .data/PACS/cartoon and sketch on the warm machine:
# the seed's grid) | pairs (all four domains on hand; 12 pairs x 2 adaptations x 3 seeds, 8
# epochs; rerun on the warm machine to go on: finished runs in the scratch pairs/ are skipped).
# .whl holds what the GPU image lacks: `pip download --no-deps -d .whl ml_collections` (the first
# session's image had everything else jaxdann imports). .data/PACS/<domain>: `mkdir -p .data/PACS &&
# cp -r ../shared/data/PACS/<domain> .data/PACS/` before the call that carries it.
# Results go to $OUT (device tool) or ./gpu_out; scratch files (run folders, caches, the wheels'
# install) to $GPU_SESSION_SCRATCH or /tmp. tests/test_gpu_session.py runs the parts on the CPU.
set -uo pipefail
part=${1:-step}
out=${OUT:-gpu_out}
tmp=${GPU_SESSION_SCRATCH:-/tmp}
mkdir -p "$out" "$tmp"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$tmp/site" .whl/*.whl || exit 1
fi
export PYTHONPATH=$tmp/site:$PWD PYTHONUNBUFFERED=1
ls .data/PACS

rc=0
# logged FILE SECONDS LINES COMMAND...: COMMAND's whole output goes to FILE (tracebacks too), its
# last LINES to the terminal. It may run SECONDS at most, so a hang costs one timeout, not the
# call; a failure or a timeout (exit 124) is written into FILE and into this script's exit code.
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

step() {
  # The compilation cache (here only) lets later runs reuse XLA's autotuning and the profile run
  # reuse the B=256 bf16 step's executable. About 5 minutes in all on an H200 (estimate).
  export JAX_COMPILATION_CACHE_DIR=$tmp/jax_cache_step
  rm -rf "$tmp/demo_gpu" "$tmp/prof_bf16"
  local bench="python3 benchmarks/train_step.py --image-size 224 --steps 20 --warmup 3"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/env.txt"
  logged "$out/env.txt" 60 1 python3 -c "import jax, flax, optax, torch; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'optax', optax.__version__, 'torch', torch.__version__)"
  logged "$out/step_f32.txt" 150 3 $bench --batch-size 256 --compare-torch
  for batch in 256 512; do
    logged "$out/step_bf16_b$batch.txt" 120 2 $bench --batch-size $batch --dtype bfloat16 --breakdown
  done
  # AlexNet's computation variants (same function and parameters): which is faster here?
  for variant in "--stem space_to_depth" "--pool-gradient xla" "--stem space_to_depth --pool-gradient xla"; do
    logged "$out/step_bf16_variants.txt" 90 1 $bench --batch-size 256 --dtype bfloat16 $variant
  done
  # Where the bf16 step's time goes: the largest GPU kernels per step (self time); its 20 timed
  # steps are also a second run of the default, the noise floor for the variants above.
  logged "$out/profile_bf16_b256.txt" 120 24 $bench --batch-size 256 --dtype bfloat16 --profile "$tmp/prof_bf16"
  # Last: the demo (measured before; 35 s), so a short call loses it first.
  logged "$out/demo.txt" 120 5 bash -c "time python3 -m jaxdann.train --workdir '$tmp/demo_gpu'"
}

seed() {
  unset JAX_COMPILATION_CACHE_DIR  # its first epoch includes a cold compilation, as a user's would
  for domain in photo art_painting; do  # one came with an earlier call: the machine must be warm
    if [ ! -d ".data/PACS/$domain" ]; then
      echo "no .data/PACS/$domain on this machine (cold since its call?): seed experiment not run"
      rc=1
      return
    fi
  done
  logged "$out/seed_experiment.txt" 180 3 python3 benchmarks/seed_experiment.py --root .data/PACS \
    --epochs 30 --config.checkpoint_every_epochs=10
}

case "$part" in
step)
  step
  ;;
seed)
  seed
  ;;
all)
  step
  seed
  ;;
hold)
  echo "carried"
  ;;
grid)
  logged "$out/grid.log" 500 5 bash -c "time python3 -m jaxdann.sweep --config configs/pacs_dann.py \
    --workdir '$tmp/grid' --learning_rates 0.01,0.001,0.00001 --optimizers sgd,adam,rmsprop \
    --adaptations none,dann --config.data.root=.data/PACS --config.model.pretrained=none \
    --config.epochs=25 --config.checkpoint_every_epochs=25 --config.log_every_epoch=false"
  cp "$tmp"/grid/results.csv "$tmp"/grid/heatmap_validation_*.png "$tmp"/grid/best_curves_dann.png "$out/" 2>/dev/null
  logged "$out/grid.log" 60 10 python3 -m jaxdann.report "$tmp/grid" --output "$out"
  ;;
pairs)
  logged "$out/pairs.log" 540 25 bash -c "time python3 -m jaxdann.pairs --config configs/pacs_dann.py \
    --workdir '$tmp/pairs' --seeds 0,1,2 --config.data.root=.data/PACS \
    --config.model.pretrained=none --config.epochs=8 --config.checkpoint_every_epochs=0 \
    --config.log_every_epoch=false"
  cp "$tmp/pairs/pairs.md" "$tmp/pairs/pairs_runs.csv" "$out/" 2>/dev/null
  ;;
*)
  echo "unknown part '$part': step, seed, all, hold, grid or pairs"
  rc=2
  ;;
esac
exit $rc
