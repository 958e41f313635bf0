"""Selective-scan backends (Mamba's S6 recurrence) behind one contract, mamba_ssm's layout.

For every batch b, channel d and state n, with time t along the last axis:

    delta_t = softplus(delta_t + delta_bias)            (bias and softplus optional)
    h_t     = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t
    y_t     = C_t . h_t + D * u_t,     y_t *= silu(z_t)  (D and z optional)

Shapes: u, delta, z (batch, d_inner, length); A (d_inner, d_state); B, C (batch, d_state, length); D, delta_bias
(d_inner,); states (batch, d_inner, d_state). Backends:

- `reference` (`reference.py`): pure PyTorch, any device, float32/float64 (half types are computed in float32),
  autograd; chunked and segmented, or in place piece by piece for streamed chunks and wide layers.
- `naive` (`reference.py`): the plain sequential loop, one step per time step: the test oracle and the
  benchmark baseline.
- `cpu` (`cpu_kernel.py`, `cpu_kernel.c`): one fused loop in C over time, vectorised over channels, built with
  the C compiler on first use and loaded with ctypes; CPU float32, inference only (no autograd). `auto` picks
  it for such scans when it builds (5x faster than the reference on WaveMamba's decoder), else the reference.
- `cuda` (`mamba_adapter.py`): `mamba_ssm`'s fused kernel (`selective_scan_fn`), for CUDA tensors when
  `mamba_ssm` imports.
- `triton` (`triton_kernels.py`): the project's own fused forward/backward kernels, for CUDA tensors when Triton
  imports (it comes with torch's CUDA wheels); also takes an initial state and propagates gradients through both
  states. On CPU only under Triton's interpreter (TRITON_INTERPRET=1), for tests.

`dispatch.py` selects the backend (`resolve_backend`, `auto` or TSE_SCAN_BACKEND) and holds the entry points;
`common.py` what they share. Imports go one way: dispatch -> backends -> common; none imports dispatch.
`selective_scan_step` is the streaming form: state in, chunk of any length >= 1, outputs and state out.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# the public names, each from its module; imported on first use, so that no module of this package imports the
# package's own modules back (the backends import `common` only, `dispatch` imports the backends)
_EXPORTS = {
    "BACKENDS": "dispatch",
    "ENV_VAR": "dispatch",
    "resolve_backend": "dispatch",
    "selective_scan": "dispatch",
    "selective_scan_step": "dispatch",
    "triton_available": "dispatch",
    "mamba_ssm_available": "mamba_adapter",
    "cpu_kernel_available": "cpu_kernel",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
