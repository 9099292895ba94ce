#!/usr/bin/env bash
# GPU benchmark, unattended: one CUDA GPU, no downloads, under 8 minutes on an H200.
# Uses the python on PATH (which must have a CUDA torch and transformers); results go to
# stdout and, when $OUT is set, to $OUT/gpu-bench.json.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"
PYTHONUNBUFFERED=1 timeout 480 python3 bench/gpu.py "$@"
