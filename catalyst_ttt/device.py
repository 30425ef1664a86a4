"""Where a cell computes and in which precision: `device=auto|cpu|cuda` (docs/gpu.md).

A cell trains where its model is: the pipeline loads every model onto the resolved device, and each
trainer takes its device and precision arguments from the model it trains (`precision_args`). On
the CPU those are the CPU path's own (fp32, `use_cpu`), so CPU numbers do not change; on a CUDA GPU
training runs under bf16 autocast over fp32 weights where the GPU supports bf16, and fp32 matmuls
use TF32. Like `threads`, `device` places a cell without changing its recipe: it is not part of the
cell's hash, and result.json records where the cell ran.

Torch is imported where it is used: composing and checking a config needs no torch.
"""

from __future__ import annotations

import importlib.util

from catalyst_ttt.errors import UserError

DEVICES = ("auto", "cpu", "cuda")  # `device`; config.validate checks the choice and its vLLM and micro-batch rules
# No vLLM release fits the pinned stack yet (docs/gpu.md): say so where a user asks for it.
VLLM_MISSING = (
    "ttt.use_vllm=true needs vLLM, which is not installed; no vLLM release supports torch 2.13.0 with "
    "transformers 5.24.0 yet (docs/gpu.md): use ttt.use_vllm=false"
)


def resolve_device(requested: str, use_vllm: bool = False) -> str:
    """`device=requested` on this machine: "cuda" or "cpu" (auto: CUDA when torch sees it). Asking for
    CUDA where there is none, or for vLLM where the cell lands on the CPU, is the user's error. On a
    GPU, fp32 matmuls use TF32 from here on."""
    import torch

    has_cuda = torch.cuda.is_available()
    if requested == "cuda" and not has_cuda:
        raise UserError("device=cuda but torch sees no CUDA device here; use device=auto or device=cpu")
    device = "cuda" if has_cuda and requested != "cpu" else "cpu"
    if use_vllm and device == "cpu":
        raise UserError("ttt.use_vllm=true needs a GPU and this cell runs on the CPU: use ttt.use_vllm=false")
    if use_vllm and importlib.util.find_spec("vllm") is None:
        raise UserError(VLLM_MISSING)
    if device == "cuda":
        torch.set_float32_matmul_precision("high")
    return device


def uses_bf16(device) -> bool:
    """bf16 on a CUDA GPU that supports it (Ampere and later); fp32 anywhere else."""
    import torch

    return torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported()


def precision_args(device) -> dict:
    """A trainer's device and precision arguments for a model on `device`. A trainer that is not told
    `use_cpu` trains on the GPU, so only the CPU path sets it."""
    import torch

    if torch.device(device).type == "cpu":
        return {"use_cpu": True, "bf16": False}
    return {"bf16": uses_bf16(device)}


def device_record(device: str) -> dict:
    """Where a cell ran, for result.json: device, training precision, and the GPU's name."""
    import torch

    gpu = torch.cuda.get_device_name(device) if device == "cuda" else None
    return {"device": device, "precision": "bf16" if uses_bf16(device) else "fp32", "gpu": gpu}
