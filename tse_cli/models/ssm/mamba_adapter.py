"""The `cuda` selective-scan backend: `mamba_ssm`'s fused kernel (`selective_scan_fn`), adapted to the contract
of `tse_cli.models.ssm` (an initial state, the last state returned). mamba_ssm is an optional extra
(`pip install 'tse-cli[cuda]'`): it is imported on first use only, and only for CUDA tensors.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor

from tse_cli.models.ssm.common import effective_delta, skip_and_gate


@functools.cache
def mamba_kernel() -> Callable | None:
    """mamba_ssm's fused scan, or None when it does not import (it needs its compiled CUDA extension)."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # ImportError, or OSError/RuntimeError from a broken or mismatched compiled extension
        return None
    return selective_scan_fn


def mamba_ssm_available() -> bool:
    """True when `mamba_ssm`'s CUDA scan imports (only ever tried for CUDA tensors)."""
    return mamba_kernel() is not None


def mamba_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    initial_state: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """mamba_ssm's kernel (A, D, delta_bias in float32 as it expects): y in u's dtype, last state (float32).

    The kernel starts from a zero state; an initial state h0 adds C_t . (exp(A * cumsum(delta)_t) * h0) to the
    outputs and its decayed value to the last state (A is time-invariant), computed here before the z gate.
    """
    scan = mamba_kernel()
    A32 = A.float()
    D32 = None if D is None else D.float()
    bias32 = None if delta_bias is None else delta_bias.float()
    if initial_state is None:
        return scan(u, delta, A32, B, C, D32, z, bias32, delta_softplus, return_last_state=True)
    y, last = scan(u, delta, A32, B, C, D32, None, bias32, delta_softplus, return_last_state=True)
    h0 = initial_state.float()
    decay = torch.exp(effective_delta(delta, delta_bias, delta_softplus, torch.float32).cumsum(-1)[..., None] * A32)
    y = y.float() + torch.einsum("bdln,bdn,bnl->bdl", decay, h0, C.float())
    last = last.float() + decay[:, :, -1] * h0
    return skip_and_gate(y, u.float(), None, z).to(u.dtype), last
