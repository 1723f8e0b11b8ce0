#!/usr/bin/env bash
# The GPU measurement of docs/PERFORMANCE.md, ready to run on a machine with one CUDA GPU (45 GB of
# disk in $HUREF_BENCH_CACHE). Two stages, each one command under a device's 10-minute limit; run
# them on the same warm machine (the cache stays between calls):
#   bash scripts/bench_gpu.sh build     # the 70B-shaped partial checkpoint and the DeepSeek-V3-shaped one
#   bash scripts/bench_gpu.sh measure   # `huref invariants --device cuda` in float32 and bfloat16 beside the
#                                       # GPU's matmul floor (and the CPU's terms for agreement) -> results/gpu.json
# `all` runs both. measure copies results/gpu.json to $OUT when set; then, where the other results
# are: python scripts/bench.py report.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${HUREF_BENCH_CACHE:-/tmp/huref-bench}"
STAGE="${1:-all}"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')"
build() { python -m huref_lab.bench --cache "$CACHE" build --sizes 70b --deepseek 256; }
measure() {
  python -m huref_lab.bench --cache "$CACHE" gpu
  if [ -n "${OUT:-}" ]; then cp "$CACHE/results/gpu.json" "$OUT/"; fi
}
case "$STAGE" in
  build) build ;;
  measure) measure ;;
  all) build; measure ;;
  *) echo "usage: bash scripts/bench_gpu.sh [build|measure|all]" >&2; exit 2 ;;
esac
