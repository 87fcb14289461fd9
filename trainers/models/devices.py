"""`cpu`, `cuda`, `cuda:N` or `auto` as a torch device, refused in one line when it is not there."""

from __future__ import annotations

from typing import Any

from gymwire.sdk.errors import UsageError

__all__ = ["torch_device"]


def torch_device(name: str, option: str = "model.device") -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"{option}={name!r} is not a device; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"{option}={name!r} but torch sees no CUDA GPU; use cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"{option}={name!r} but torch sees {torch.cuda.device_count()} GPU(s); use cuda:0..")
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"{option}={name!r}: gymwire runs on cpu or cuda; use cpu, cuda or auto")
    return device
