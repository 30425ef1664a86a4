#!/usr/bin/env bash
# The prepared device check (docs/gpu.md): two real `model=hf task=gsm8k` cells (full and LoRA TTT) on
# one GPU, end to end, from a random Qwen2 model and data built here; nothing is downloaded. Prints
# each cell's status, TTT and generate tokens/s and peak GPU memory; writes OUT_DIR/gpu_check.json
# and each cell's result.json under OUT_DIR/runs. Needs the pinned stack with a CUDA build of torch.
#
#   scripts/gpu_check.sh [OUT_DIR] [CELL OVERRIDES...]    (OUT_DIR: default $OUT, else runs/gpu_check)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-runs/gpu_check}}
shift || true
python=.venv/bin/python
[ -x "$python" ] || python=python3
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled  # everything is local
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
# 8 minutes at most, everything included (4-5 expected on an H100/H200: docs/gpu.md)
exec timeout 480 "$python" -m catalyst_ttt.gpu_check "$out" --device cuda "$@"
