#!/usr/bin/env bash
# The GPU checks of the hps/ issue, as one script for a lent device machine (see README).
# Expects the pure-Python wheels open_clip needs in .wheels/ (carried; the machine is offline):
#   pip download --no-deps -d .wheels open_clip_torch ftfy wcwidth
set -euo pipefail
out="${OUT:-/tmp/gpu-out}"
mkdir -p "$out" /tmp/pydeps
python3 -m pip install -q --no-deps --no-index --target /tmp/pydeps .wheels/*.whl
export PYTHONPATH="$PWD:/tmp/pydeps"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, open_clip; print('torch', torch.__version__, 'open_clip', open_clip.__version__)" | tee -a "$out/gpu.txt"
python3 -m bench.score --device cuda --arch hps-v2 --batch 64 --images 2048 \
  --naive-images "${NAIVE_IMAGES:-0}" --json | tee "$out/score_vit_h14.json"
python3 -m bench.score --device cuda --arch hps-v2 --batch 64 --images 2048 --compile \
  --naive-images 0 --json | tee "$out/score_vit_h14_compiled.json"
python3 -m bench.train --device cuda --arch hps-v1 --batch 32 --steps 8 --json | tee "$out/train_vit_l14.json"
