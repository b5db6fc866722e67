"""Where the model runs: the one reading of `--device` and `--amp`, for training, evaluation and serving.

    dev = resolve_device("auto")              # cuda when available, else cpu
    amp = resolve_amp("auto", dev)            # "bf16" / "fp16" on a GPU, "off" on the CPU
    with autocast(dev, amp): y = G(x)
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from engine.errors import UserError


def resolve_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """'auto' -> cuda when available, else cpu; a bare 'cuda' takes GPU `local_rank` (a DDP process's own).

    'cuda' on a machine whose PyTorch sees no GPU is a UserError (one line, exit 2).
    """
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda was asked for, but this PyTorch sees no CUDA GPU (use --device cpu)")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def resolve_amp(amp: str, device: torch.device) -> str:
    """'auto' -> bf16 on a GPU that has it, else fp16 on a GPU; always 'off' on the CPU."""
    if device.type != "cuda" or amp == "off":
        return "off"
    if amp == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return amp


def autocast(device: torch.device, amp: str):
    """The mixed-precision context for `amp` ('off', 'bf16', 'fp16') on `device`."""
    if amp == "off":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
