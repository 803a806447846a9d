#!/usr/bin/env bash
# The GPU checks of the Stable Diffusion issue, as one script for a lent device machine.
# Carry .wheels/ with: pip download --no-deps -d .wheels open_clip_torch ftfy wcwidth diffusers importlib_metadata
set -euo pipefail
out="${OUT:-/tmp/gpu-out}"
mkdir -p "$out" /tmp/pydeps
python3 -m pip install -q --no-deps --no-index --target /tmp/pydeps .wheels/*.whl
export PYTHONPATH="$PWD:/tmp/pydeps"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -m bench.generate --sd15 --device cuda --images 16 --batch 4 --steps 25 --lora-steps 12 \
  --json | tee "$out/generate_sd15.json"
