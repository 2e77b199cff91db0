#!/usr/bin/env bash
# One prepared GPU session: install the package (and carried wheels), run the model benchmark at ViT-B/16
# dims on CUDA and the model tests on the GPU machine. Writes logs to $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
pip_args=(--no-deps --no-compile --no-cache-dir -q)
if ls .whl/*.whl >/dev/null 2>&1; then python3 -m pip install "${pip_args[@]}" --no-index .whl/*.whl; fi
python3 -m pip install "${pip_args[@]}" --no-build-isolation .
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "${OUT:-/tmp}/gpu.txt"
python3 benchmarks/model_throughput.py --backbone vit-b16 --device cuda --batch-size 32 --steps 20 \
  2>&1 | tee "${OUT:-/tmp}/throughput_vit_b16_cuda.md"
python3 -m pytest -q -p no:cacheprovider tests/client/model -o addopts="" --import-mode=importlib \
  2>&1 | tail -5 | tee "${OUT:-/tmp}/gpu_tests.txt"
# The shipped defaults on ViT-B/16: random weights of the real shapes always; with the real weights (a local
# copy of openai/clip-vit-base-patch16 in $CLIP_B16_DIR: the GPU machine reaches no model hub) also the
# new-domain benchmark, so its table can be read beside the embedded backbone's.
if [ -n "${CLIP_B16_DIR:-}" ] && [ -d "${CLIP_B16_DIR}" ]; then
  python3 benchmarks/backbone_stability.py --model "$CLIP_B16_DIR" --device cuda 2>&1 | tee "${OUT:-/tmp}/stability_real.md"
  python3 benchmarks/new_domains.py --model "$CLIP_B16_DIR" --device cuda --seeds 0,1,2 \
    --log "${OUT:-/tmp}/new_domains_runs_clip-vit-base-patch16.jsonl" 2>&1 | tail -60 | tee "${OUT:-/tmp}/new_domains_real.md"
else
  python3 benchmarks/backbone_stability.py --device cuda 2>&1 | tee "${OUT:-/tmp}/stability_vit_b16_random.md"
fi
