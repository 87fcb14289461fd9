"""The numeric precision the trainer and its transformers policy compute in: one place, imported
by both (a leaf module, so neither imports the other for it)."""

from __future__ import annotations

import torch

__all__ = ["autocast_for"]


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA; full precision on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)
