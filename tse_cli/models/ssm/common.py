"""Pieces every selective-scan backend shares: the effective delta, the skip and gate, the compute dtype.

Inside a streamer's `Scratch.active()` these write into scratch tensors (`scratch` gives None elsewhere, and the
operations allocate as usual). F.softplus and F.silu have no out= argument: torch._C._nn's are the functions
they call.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tse_cli.models.streaming import scratch


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a scan computes in for inputs of `dtype`: float64 for float64, float32 for everything else."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def tracks_grad(*tensors: Tensor | None) -> bool:
    """Autograd is recording and one of `tensors` requires a gradient."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def effective_delta(delta: Tensor, bias: Tensor | None, softplus: bool, dtype: torch.dtype) -> Tensor:
    """delta + bias, through softplus when asked, in `dtype`: (batch, d_inner, length)."""
    delta = delta.to(dtype)
    if bias is not None:
        delta = torch.add(delta, bias.to(dtype)[:, None], out=scratch(delta))
    return torch._C._nn.softplus(delta, out=scratch(delta)) if softplus else delta


def skip_and_gate(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None) -> Tensor:
    """y + D * u, then times silu(z): (batch, d_inner, length) in y's dtype."""
    if D is not None:
        y = torch.addcmul(y, u, D.to(y.dtype)[:, None], out=scratch(y))
    if z is not None:
        y = torch.mul(y, torch._C._nn.silu(z.to(y.dtype), out=scratch(z)), out=scratch(y))
    return y
