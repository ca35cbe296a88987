"""Devices and numeric precision: where a run computes and whether it autocasts to bfloat16."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch


def pick_device(requested: str, local_rank: int = 0) -> torch.device:
    """``auto`` takes the GPU of this rank when there is one, else the CPU."""
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device: cuda was requested but torch sees no CUDA device")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def cpu_has_bf16() -> bool:
    """Native bf16 arithmetic (AVX512-BF16 or AMX): where CPU autocast pays off."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_bf16(precision: str, device: torch.device) -> bool:
    """``auto``: bf16 autocast where the hardware does bf16 natively; ``bf16`` forces it; ``32`` never."""
    if precision == "32":
        return False
    if precision == "bf16":
        return True
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_bf16()


def autocast(enabled: bool, device: torch.device) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()
