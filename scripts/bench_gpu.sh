#!/usr/bin/env bash
# The GPU measurement of docs/PERFORMANCE.md, ready to run on a machine with one CUDA GPU (about
# 10 minutes on an H100 with 16 cores; 45 GB of disk in $HUREF_BENCH_CACHE): builds the 7B- and
# 70B-shaped partial checkpoints and the DeepSeek-V3-shaped one, times `huref invariants --device
# cuda` in float32 and bfloat16 beside the GPU's matmul floor (and the CPU's terms of 7B and 70B for
# agreement), and leaves results/gpu.json in the cache, copied to $OUT when set. Then, where the
# other results are: python scripts/bench.py report.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${HUREF_BENCH_CACHE:-/tmp/huref-bench}"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')"
python -m huref_lab.bench --cache "$CACHE" build --sizes 70b --deepseek 256
python -m huref_lab.bench --cache "$CACHE" gpu
if [ -n "${OUT:-}" ]; then cp "$CACHE/results/gpu.json" "$OUT/"; fi
