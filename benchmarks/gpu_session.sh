#!/usr/bin/env bash
# One lent-GPU session, in two calls (a call carries at most 64 MiB: one PACS domain each).
#   part 1 (carry .whl .data/PACS/photo): environment, demo on GPU, step benchmarks (f32 vs torch, bf16)
#   part 2 (carry .data/PACS/art_painting; photo stays on the warm machine): the seed experiment
# Results go to $OUT (device tool) or ./gpu_out.
set -uo pipefail
part=${1:-1}
out=${OUT:-gpu_out}
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
if [ "$part" = 1 ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/env.txt"
  python3 -c "import jax, flax, optax, orbax.checkpoint as o, torch; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'optax', optax.__version__, 'torch', torch.__version__)" | tee -a "$out/env.txt"
  ( time python3 -m jaxdann.train --workdir /tmp/demo_gpu --config.log_every_epoch=false ) 2>&1 | grep -v "it/s" | tail -4 | tee "$out/demo.txt"
  for batch in 256; do
    python3 benchmarks/train_step.py --batch-size $batch --image-size 224 --steps 20 --warmup 3 --compare-torch 2>&1 | tail -3 | tee "$out/step_f32_b$batch.txt"
    python3 benchmarks/train_step.py --batch-size $batch --image-size 224 --steps 20 --warmup 3 --dtype bfloat16 2>&1 | tail -2 | tee "$out/step_bf16_b$batch.txt"
  done
  python3 -c "from jaxdann import data; d = data.load_domain('.data/PACS', 'photo', cache_dir='/tmp/photo_cache', progress=False); print('photo decoded', d.images.shape)"
else
  python3 benchmarks/seed_experiment.py --root .data/PACS --epochs 30 --config.checkpoint_every_epochs=10 2>&1 | grep -v "it/s" | tail -33 | tee "$out/seed_experiment.txt"
fi
