"""Device names: ``auto`` picks CUDA when present, then MPS, then the CPU."""

from __future__ import annotations

import re

from thresher.core.errors import ConfigError

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device_name(device: str) -> str:
    """Validate a device string without importing torch."""
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise ConfigError(
            f"Unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.",
            field="device",
        )
    return device


def resolve_device(device: str = "auto") -> str:
    """Turn ``auto`` into the best available device; check that an explicit one exists."""
    check_device_name(device)
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"Device {device!r} was asked for but CUDA is not available.", field="device"
        )
    return device
