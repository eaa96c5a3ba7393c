#!/usr/bin/env bash
# Run the benchmark suite on CUDA with the device machine's own python3 (torch + transformers
# preinstalled there; no streamlit needed). From the repository root:  bash bench/gpu.sh
# Prints everything to stdout and keeps a copy in $OUT/bench-gpu.txt when $OUT is set.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
log=${OUT:-/tmp}/bench-gpu.txt
{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
  $PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
  BENCH_DEVICE=cuda $PY -m bench
  echo "-- same suite on this machine's CPU (16 cores) for reference --"
  BENCH_DEVICE=cpu CUDA_VISIBLE_DEVICES= $PY -m bench.engine
  BENCH_DEVICE=cpu CUDA_VISIBLE_DEVICES= $PY -m bench.speculative
} 2>&1 | tee "$log"
