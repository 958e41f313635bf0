"""Devices by name, checked before any work: what `--device` means for `tse extract` and `tse train`."""

from __future__ import annotations

import torch


class DeviceError(ValueError):
    """A device that was asked for but is not available (the message is one line for the user)."""


def resolve_device(spec: str) -> torch.device:
    """`auto` (first CUDA GPU, else CPU), `cpu`, `cuda` or `cuda:N`; raise `DeviceError` if not available."""
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        index = spec.partition(":")[2]
        if index and not index.isdigit():
            raise DeviceError(f"invalid device {spec!r}; use auto, cpu, cuda or cuda:N")
        if not torch.cuda.is_available():
            raise DeviceError(f"device {spec!r} requested but CUDA is not available (use --device cpu)")
        if index and int(index) >= torch.cuda.device_count():
            raise DeviceError(f"device {spec!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
        return torch.device(spec)
    raise DeviceError(f"invalid device {spec!r}; use auto, cpu, cuda or cuda:N")
