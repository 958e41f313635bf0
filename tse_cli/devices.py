"""Devices by name, checked before any work: what `--device` means for `tse extract` and `tse train`; and the
CPU allocator setting that block-wise extraction on a CPU wants."""

from __future__ import annotations

import ctypes
import functools
import os

import torch

# glibc's malloc serves blocks above its mmap threshold (128 KiB, raised to at most 32 MiB as such blocks are
# freed) from fresh pages and returns them on free, and trims the heap beyond its trim threshold: the 4-8 MB
# tensors of a 65,536-sample block then fault their pages in anew (measured 700-14,000 minor faults per block
# for WaveMamba, 10-20% of its time). Above these thresholds: fresh pages again (a one-off large buffer).
MMAP_THRESHOLD = 64 << 20
TRIM_THRESHOLD = 512 << 20


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


@functools.cache
def keep_cpu_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse (the thresholds above) in this process; True if it did.

    For the engine's block-wise extraction on a CPU: steady state then allocates without page faults. Freed
    memory stays with the process up to TRIM_THRESHOLD (its peak is unchanged). Other C libraries (macOS,
    musl, Windows) are left as they are."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
        mallopt = ctypes.CDLL(None).mallopt
    except (ValueError, OSError, AttributeError):  # no such confstr name, or no glibc symbols
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, MMAP_THRESHOLD)) and bool(mallopt(m_trim_threshold, TRIM_THRESHOLD))
