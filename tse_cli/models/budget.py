"""Model sizes checked against the machine before any memory is taken: absurd sizes are one line, not an OOM.

`meta_model(arch, config)` builds the model with every tensor factory sent to PyTorch's meta device (shapes
only, no memory; `arange` is shaped here, because on the meta device it goes through Python decompositions that
import sympy and torch._dynamo, seconds of start-up; the models compute their small tables on the CPU and
`placed` puts them on the meta device); the build gives up with a `ModelSizeError` once it passes
`MAX_MODULES` modules (an absurd layer count takes minutes even without memory). `weight_bytes` sums its
parameters and buffers, and `check_fits(arch, config, device, copies)` refuses a configuration whose `copies` x
weights exceed `device`'s memory: the physical RAM (or the container's cgroup limit, if lower) for the CPU, the
GPU's total memory for CUDA. `tse_cli.models.create` checks 1 copy in RAM before it builds anything; training
checks `TRAINING_COPIES` (weights, gradients and the two Adam moments) on its device. Activations come on top,
so a model that passes can still be too large to run; one that fails never could.
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

MAX_MODULES = 10_000  # the largest architecture here has about 650
TRAINING_COPIES = 4
_state = threading.local()  # `measuring`: a meta_model build is running in this thread


class ModelSizeError(ValueError):
    """A model configuration too large for this machine (the message is one line)."""


def memory_of(device: str | torch.device = "cpu") -> int:
    """Bytes of memory `device` has: total GPU memory for CUDA, else physical RAM (or a lower cgroup limit)."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(device.index or 0).total_memory
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            ram = min(ram, int(text))
    return ram


def human(n: float) -> str:
    """Bytes as "3.2 GB" (powers of 1000)."""
    units, i = ("B", "kB", "MB", "GB", "TB", "PB"), 0
    while n >= 1000 and i < len(units) - 1:
        n, i = n / 1000, i + 1
    return f"{n:.0f} B" if i == 0 else f"{n:.1f} {units[i]}"


def _described(arch: str, config: dict[str, Any], origin: str) -> str:
    settings = f" with {', '.join(f'{k}={v}' for k, v in config.items())}" if config else ""
    return f"{origin + ': ' if origin else ''}{arch}{settings}"


class _OnMeta(TorchFunctionMode):
    """Tensor factories without a device create meta tensors; `arange` is shaped without its decomposition."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 (torch's protocol)
        from torch.utils._device import _device_constructors

        kwargs = kwargs or {}
        bounds = [*args, *(kwargs[k] for k in ("start", "end", "step") if k in kwargs)]
        if func is torch.arange and kwargs.get("device") is None and all(isinstance(b, int | float) for b in bounds):
            start, end, step = (0, bounds[0], 1) if len(bounds) == 1 else (*bounds[:2], *(bounds[2:3] or [1]))
            integral = all(isinstance(b, int) for b in (start, end, step))
            dtype = kwargs.get("dtype") or (torch.int64 if integral else torch.get_default_dtype())
            return torch.empty(max(0, math.ceil((end - start) / step)), dtype=dtype, device="meta")
        if func in _device_constructors() and kwargs.get("device") is None:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def meta_model(arch: str, config: dict[str, Any], origin: str = "") -> nn.Module:
    """`create(arch, **config)` with shapes only (no memory); raises `ModelSizeError` past `MAX_MODULES`."""
    from torch.nn.modules import module as registry

    from tse_cli.models import create

    modules = [0]

    def count(*_: object) -> None:
        modules[0] += 1
        if modules[0] > MAX_MODULES:
            what = _described(arch, config, origin)
            raise ModelSizeError(f"{what} has more than {MAX_MODULES:,} layers and modules; check its sizes")

    handle = registry.register_module_module_registration_hook(count)
    _state.measuring = True
    try:
        with _OnMeta():
            return create(arch, **config)
    finally:
        _state.measuring = False
        handle.remove()


def placed(table: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """A small table or init vector computed on the CPU, moved to `device`, else where tensor factories put
    tensors now (the meta device during `meta_model`): arithmetic on meta tensors goes through Python
    decompositions that import torch._dynamo, about 3 s of every CLI start, so models compute such tables on the
    CPU and place them with this."""
    return table.to(device if device is not None else torch.empty(0).device)


def measuring() -> bool:
    """Whether a `meta_model` build is running in this thread (`create` then checks nothing)."""
    return getattr(_state, "measuring", False)


def size_of(model: nn.Module) -> int:
    """Bytes of `model`'s parameters and buffers (shared tensors once; meta tensors count their shapes)."""
    tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}.values()
    return sum(t.numel() * t.element_size() for t in tensors)


def check_fits(
    arch: str, config: dict[str, Any], device: str | torch.device = "cpu", copies: int = 1, origin: str = ""
) -> None:
    """Raise `ModelSizeError` (naming `origin`, where the sizes come from) when `copies` of the weights of
    `create(arch, **config)` exceed `device`'s memory; nothing is allocated."""
    model = meta_model(arch, config, origin)
    size, have = size_of(model), memory_of(device)
    if copies * size > have:
        parts = "its weights" if copies == 1 else f"{copies} copies of its weights (weights, gradients, optimizer)"
        where = "this machine's" if torch.device(device).type == "cpu" else f"the {torch.device(device)}'s"
        parameters = sum(p.numel() for p in model.parameters())
        raise ModelSizeError(
            f"{_described(arch, config, origin)} has {parameters:,} parameters: {parts} need "
            f"{human(copies * size)}, more than {where} {human(have)} of memory; check its sizes"
        )
