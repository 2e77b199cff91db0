#!/usr/bin/env bash
# One prepared GPU session: install carried wheels, expose the source tree as `pfeddc`, run the model
# benchmark at ViT-B/16 dims on CUDA and the model tests on the GPU machine. Writes logs to $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
mkdir -p /tmp/pkg/pfeddc
for d in client server common; do ln -sfn "$PWD/$d" /tmp/pkg/pfeddc/$d; done
export PYTHONPATH=/tmp/pkg:${PYTHONPATH:-}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "${OUT:-/tmp}/gpu.txt"
python3 benchmarks/model_throughput.py --backbone vit-b16 --device cuda --batch-size 32 --steps 20 \
  2>&1 | tee "${OUT:-/tmp}/throughput_vit_b16_cuda.md"
python3 -m pytest -q -p no:cacheprovider tests/client/test_model.py -o addopts="" --import-mode=importlib \
  2>&1 | tail -5 | tee "${OUT:-/tmp}/gpu_tests.txt"
