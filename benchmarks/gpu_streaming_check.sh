#!/usr/bin/env bash
# The GPU check of issue 20 (not run yet: no GPU was lent to the session that wrote it).
#
# On one CUDA GPU, with a random-initialised Llama-2-13B-shaped model (40 layers, hidden 5120,
# intermediate 13824, 40 heads, bf16, about 26 GB on disk; built first, a shard per layer):
#   1. FLAP scored layer by layer (`prunebench score --stream`) under a 20 GiB device budget: the
#      device's peak memory (CUDA allocator) and the time, from the scores' metadata;
#   2. BlockPruner's greedy search on the resident model, first 2 steps, with a device cache budget of
#      4 GiB against none: the same order, the time ratio and both device peaks;
#   3. BlockPruner's search with the weights streamed (`score --stream`, first 6 steps) under a 20 GiB
#      device budget: the device's peak, the time and the sweeps / sublayer loads (about 5 more minutes).
# Writes $OUT/streaming-13b.json, $OUT/greedy-13b.txt and $OUT/greedy-streamed-13b.json ($OUT: the device tool's output folder, else
# ./gpu-check-out). Needs ~30 GB of free disk under $WORK (default /tmp/gpu-check) and ~10 minutes
# on an H100/H200-class machine with 16 cores. Run from the repository root:
#
#   bash benchmarks/gpu_streaming_check.sh
set -euo pipefail
WORK=${WORK:-/tmp/gpu-check}
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT" "$WORK"
export PYTHONPATH=src
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python benchmarks/bench_streaming.py --work "$WORK" --shape llama2-13b --layers 40 --methods flap \
    --nsamples 64 --seqlen 128 --device cuda --device-budget 20GiB --no-resident --threads 16 \
    --out "$OUT/streaming-13b.json" 2>&1 | tail -n 5
cp resources/demo/model/tokenizer* "$WORK/llama2-13b-40l/"
python benchmarks/bench_greedy.py --model "$WORK/llama2-13b-40l" --text resources/demo/corpus \
    --device cuda --dtype bfloat16 --methods blockpruner --bp-nsamples 16 --bp-seqlen 512 --steps 2 \
    --cache-gb 24 --device-cache-gb 4 2>&1 | tail -n 3 | tee "$OUT/greedy-13b.txt"
python benchmarks/bench_streaming.py --work "$WORK" --shape llama2-13b --layers 40 --methods blockpruner \
    --nsamples 16 --seqlen 128 --device cuda --device-budget 20GiB --no-resident --threads 16 \
    --out "$OUT/greedy-streamed-13b.json" 2>&1 | tail -n 3
