#!/usr/bin/env bash
# The GPU checks of issue 16 (item 7), as one script for a lent device machine (see README):
# ViT-H/14 bf16 scoring eager and under each torch.compile mode (model only, end to end from
# PNG bytes and from stored model inputs), then training against a bare loop. Every row runs
# under its own time limit and a failed row does not stop the others; JSON lands in $OUT.
# Expects the pure-Python wheels open_clip needs in .wheels/ (carried; the machine is offline):
#   pip download --no-deps -d .wheels open_clip_torch ftfy wcwidth
set -uo pipefail
out="${OUT:-/tmp/gpu-out}"
images="${IMAGES:-2048}"
mkdir -p "$out" /tmp/pydeps
python3 -m pip install -q --no-deps --no-index --target /tmp/pydeps .wheels/*.whl
export PYTHONPATH="$PWD:/tmp/pydeps"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, open_clip; print('torch', torch.__version__, 'open_clip', open_clip.__version__)" | tee -a "$out/gpu.txt"

row() {  # row NAME SECONDS COMMAND...: one bench run, its JSON in $out/NAME.json
  local name="$1" seconds="$2"
  shift 2
  echo "== $name"
  timeout "$seconds" "$@" > "$out/$name.json" 2> "$out/$name.err"
  local status=$?
  if [ "$status" -eq 0 ]; then cat "$out/$name.json"; else echo "$name: failed ($status)"; tail -5 "$out/$name.err"; fi
}

score=(python3 -m bench.score --device cuda --arch hps-v2 --batch 64 --images "$images" --json)
row score_vit_h14_eager 120 "${score[@]}" --naive-images "${NAIVE_IMAGES:-0}"
row score_vit_h14_compiled 150 "${score[@]}" --naive-images 0 --compile default
row score_vit_h14_cuda_graphs 150 "${score[@]}" --naive-images 0 --compile reduce-overhead
if [ "${MAX_AUTOTUNE:-0}" = 1 ]; then  # minutes of kernel search: only when asked
  row score_vit_h14_max_autotune 420 "${score[@]}" --naive-images 0 --compile max-autotune
fi
row train_vit_l14 120 python3 -m bench.train --device cuda --arch hps-v1 --batch 32 --steps 8 --json
