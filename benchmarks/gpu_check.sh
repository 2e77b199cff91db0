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
