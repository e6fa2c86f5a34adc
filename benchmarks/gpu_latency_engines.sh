#!/usr/bin/env bash
# Eager vs compiled latency of random-initialised Llama-2-7B- and Llama-3-8B-shaped models in bfloat16 on
# one GPU (issue 21): dense vs a width plan (unaligned: nearest_keep_counts), the same plan with kept widths
# rounded to multiples of 128 (width-aligned) and a depth plan, at 20% and 50% of decoder parameters.
# Each pruned model is timed interleaved with the dense one, both engines in the same rounds; the copy
# and GEMM peaks are measured in the same process. Writes one JSON per shape to OUT_DIR (default: $OUT,
# else docs/measurements). NOT RUN YET: no GPU was lent to the session that wrote it.
#
#   bash benchmarks/gpu_latency_engines.sh            # both shapes
#   SHAPES=llama3-8b bash benchmarks/gpu_latency_engines.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT_DIR:-${OUT:-docs/measurements}}"
SHAPES="${SHAPES:-llama2-7b llama3-8b}"
PY="${PY:-python}"
mkdir -p "$OUT_DIR"
nvidia-smi -L
for shape in $SHAPES; do
  PYTHONPATH=src "$PY" benchmarks/bench_latency.py --shape "$shape" --dtype bfloat16 --device cuda \
    --engines eager,compiled --plans width,width-aligned,depth --round-to 128 --ratios 0.2,0.5 \
    --batch-sizes 1,8 --prompt-lengths 128,512 --new-tokens 64 --warmup 3 --min-repeats 5 --min-seconds 2 \
    --out "$OUT_DIR/latency-engines-$shape-gpu.json"
done
