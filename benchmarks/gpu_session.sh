#!/usr/bin/env bash
# One lent-GPU session in several calls: a call carries at most 64 MiB, so one PACS domain each
# (carried into the git-ignored .data/PACS/<domain>; it stays on the warm machine between calls).
#   bash benchmarks/gpu_session.sh step      carry .whl .data/PACS/photo: env, demo, step benchmarks
#                                            (bf16 also with conv1 space-to-depth / XLA's pool
#                                            gradient: step_bf16_variants.txt)
#   bash benchmarks/gpu_session.sh seed      carry .whl .data/PACS/art_painting: the seed experiment
#   bash benchmarks/gpu_session.sh hold      carry .whl .data/PACS/cartoon: nothing else
#   bash benchmarks/gpu_session.sh grid      carry .whl .data/PACS/sketch: the seed's grid on PACS
#   bash benchmarks/gpu_session.sh pairs     carry .whl: all 12 pairs x 2 adaptations x 3 seeds,
#                                            8 epochs, no checkpoints (all four domains on hand);
#                                            if it times out, call it again on the warm machine:
#                                            finished runs in /tmp/pairs are skipped
# .whl holds what the GPU image lacks: `pip download --no-deps -d .whl ml_collections` (the first
# session's image had everything else jaxdann imports). .data/PACS/<domain>: `mkdir -p .data/PACS &&
# cp -r ../shared/data/PACS/<domain> .data/PACS/` before the call that carries it.
# Results go to $OUT (device tool) or ./gpu_out.
set -uo pipefail
part=${1:-step}
out=${OUT:-gpu_out}
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
ls .data/PACS
case "$part" in
step)
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/env.txt"
  python3 -c "import jax, flax, optax, torch; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'optax', optax.__version__, 'torch', torch.__version__)" | tee -a "$out/env.txt"
  ( time python3 -m jaxdann.train --workdir /tmp/demo_gpu ) 2>&1 | tail -5 | tee "$out/demo.txt"
  python3 benchmarks/train_step.py --batch-size 256 --image-size 224 --steps 20 --warmup 3 --compare-torch 2>&1 | tail -3 | tee "$out/step_f32.txt"
  for batch in 256 512; do
    python3 benchmarks/train_step.py --batch-size $batch --image-size 224 --steps 20 --warmup 3 --dtype bfloat16 --breakdown 2>&1 | tail -2 | tee "$out/step_bf16_b$batch.txt"
  done
  # AlexNet's computation variants (same function and parameters): which is faster here?
  for variant in "--stem space_to_depth" "--pool-gradient xla" "--stem space_to_depth --pool-gradient xla"; do
    python3 benchmarks/train_step.py --batch-size 256 --image-size 224 --steps 20 --warmup 3 --dtype bfloat16 $variant 2>&1 | tail -1 | tee -a "$out/step_bf16_variants.txt"
  done
  # Where the bf16 step's time goes: the largest GPU kernels per step (self time).
  python3 benchmarks/train_step.py --batch-size 256 --image-size 224 --steps 5 --warmup 2 --dtype bfloat16 --profile /tmp/prof_bf16 2>&1 | tail -24 | tee "$out/profile_bf16_b256.txt"
  ;;
seed)
  python3 benchmarks/seed_experiment.py --root .data/PACS --epochs 30 --config.checkpoint_every_epochs=10 2>&1 | tail -3 | tee "$out/seed_experiment.txt"
  ;;
hold)
  echo "carried"
  ;;
grid)
  ( time python3 -m jaxdann.sweep --config configs/pacs_dann.py --workdir /tmp/grid \
      --learning_rates 0.01,0.001,0.00001 --optimizers sgd,adam,rmsprop --adaptations none,dann \
      --config.data.root=.data/PACS --config.model.pretrained=none --config.epochs=25 \
      --config.checkpoint_every_epochs=25 --config.log_every_epoch=false ) 2>&1 | tee "$out/grid.log"
  cp /tmp/grid/results.csv /tmp/grid/heatmap_validation_*.png /tmp/grid/best_curves_dann.png "$out/" 2>/dev/null
  python3 -m jaxdann.report /tmp/grid --output "$out"
  ;;
pairs)
  ( time timeout 540 python3 -m jaxdann.pairs --config configs/pacs_dann.py --workdir /tmp/pairs \
      --seeds 0,1,2 --config.data.root=.data/PACS --config.model.pretrained=none \
      --config.epochs=8 --config.checkpoint_every_epochs=0 --config.log_every_epoch=false ) 2>&1 \
      | tail -25 | tee "$out/pairs.log"
  cp /tmp/pairs/pairs.md /tmp/pairs/pairs_runs.csv "$out/" 2>/dev/null
  ;;
esac
