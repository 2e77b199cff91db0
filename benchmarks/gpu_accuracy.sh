#!/usr/bin/env bash
# The accuracy benchmark on a GPU machine: clients train on CUDA, several federations at once.
# Carry .whl (wheels missing there), .carry/fashion (Fashion-MNIST t10k idx files) and .carry/cache (the
# embedded backbone built here, so every machine evaluates the same frozen weights).
set -uo pipefail
export PYTHONUNBUFFERED=1
pip_args=(-q --no-deps --no-compile --no-cache-dir)
if ls .whl/*.whl >/dev/null 2>&1; then python3 -m pip install "${pip_args[@]}" --no-index .whl/*.whl; fi
python3 -m pip install "${pip_args[@]}" --no-build-isolation .
export PFEDDC_CACHE=$PWD/.carry/cache PFEDDC_FASHION_DIR=$PWD/.carry/fashion
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/gpu.txt"
# a one-round CUDA federation first, so a CUDA problem costs seconds, not the whole lease
python3 benchmarks/accuracy.py --out /tmp/smoke --parts participation --seeds 0 --rounds 1 --max-samples 600 \
  --device cuda --jobs 1 > "$OUT/smoke.log" 2>&1 || { tail -40 "$OUT/smoke.log"; exit 1; }
timeout "${BENCH_SECONDS:-480}" python3 benchmarks/accuracy.py --out /tmp/acc --log "$OUT/runs.jsonl" \
  --device cuda --jobs "${JOBS:-5}" --rounds 10 --seeds 0,1,2 > "$OUT/bench.log" 2>&1
tail -5 "$OUT/bench.log"
python3 benchmarks/accuracy.py --out /tmp/acc --log "$OUT/runs.jsonl" --report-only --rounds 10 --seeds 0,1,2 \
  > "$OUT/accuracy.md" 2>&1
cat "$OUT/accuracy.md"
