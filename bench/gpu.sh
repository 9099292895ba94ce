#!/usr/bin/env bash
# GPU benchmark, unattended: one CUDA GPU, no downloads, under 11 minutes on an H200 (the
# sampler check, ~3, then the sweep, under 8). Uses the python on PATH (which must have a CUDA
# torch and transformers); results go to stdout and, when $OUT is set, to
# $OUT/gpu-sampler.json and $OUT/gpu-bench.json. `bash bench/gpu.sh --sampler-only` runs only
# the sampler check.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"
# First, so a short device lease still measures it; its own limit, so a slow compile cannot
# take the sweep's time.
PYTHONUNBUFFERED=1 timeout 240 python3 bench/gpu_sampler.py || echo "sampler check failed or timed out (rc $?)"
if [[ "${1:-}" == "--sampler-only" ]]; then exit 0; fi
PYTHONUNBUFFERED=1 timeout 480 python3 bench/gpu.py "$@"
