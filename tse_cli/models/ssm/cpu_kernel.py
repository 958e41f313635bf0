"""The `cpu` selective-scan backend: `tse_scan_f32` of `tse_cli/models/kernels.c`, one fused loop over time
(vectorised over channels), built with the C compiler on first use (`tse_cli.models.kernels`).

Without a working compiler the kernels are unavailable and `auto` keeps the pure-PyTorch reference scan.
Inference only (no backward pass), float32: the caller (`dispatch.selective_scan`) sends everything else to the
reference. Large scans share their channel blocks among torch's intra-op threads (OpenMP, `kernels.threads`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tse_cli.models import kernels
from tse_cli.models.kernels import MAX_STATE, address
from tse_cli.models.streaming import transposed, working


def cpu_kernel_available() -> bool:
    """True when the kernels are built (or build now) and load."""
    return kernels.available()


def build_error() -> str:
    """Why the kernel is unavailable ("" when it is available or was not tried)."""
    return kernels.build_error()


def supports(*tensors: Tensor | None, d_state: int) -> bool:
    """The kernel can run these scan inputs: CPU float32 tensors and a d_state within its limit."""
    return d_state <= MAX_STATE and all(
        t is None or (t.device.type == "cpu" and t.dtype == torch.float32) for t in tensors
    )


def _rows(t: Tensor) -> Tensor:
    """t (batch, channels, length) as a view whose channels have unit stride (a time-major copy if needed)."""
    return t if t.stride(1) == 1 else t.transpose(1, 2).contiguous().transpose(1, 2)


def cpu_scan(
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
    last: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The scan (shapes as `tse_cli.models.ssm`'s contract, float32 CPU tensors, no autograd): y (batch, d_inner,
    length), a transposed view of time-major memory, and the last state (batch, d_inner, d_state).

    `last`: a contiguous float32 tensor to write the last state into (it may be `initial_state` itself: the
    streaming step's in-place update); y is then a scratch tensor inside a streamer's chunk.
    """
    library = kernels.library()
    if library is None:
        raise RuntimeError(f"the cpu scan kernel is not available: {build_error()}")
    (batch, d_inner, length), d_state = u.shape, A.shape[1]
    u, delta, B, C = _rows(u), _rows(delta), _rows(B), _rows(C)
    z = None if z is None else _rows(z)
    A_t = transposed(A)  # (d_state, d_inner), cached per version of A
    D = None if D is None else D.contiguous()
    bias = None if delta_bias is None else delta_bias.contiguous()
    if last is None:
        last = torch.empty(batch, d_inner, d_state) if initial_state is None else initial_state.clone()
        y = torch.empty(batch, length, d_inner)
    else:
        if initial_state is not None and initial_state.data_ptr() != last.data_ptr():
            last.copy_(initial_state)
        y = working(u, (batch, length, d_inner))

    status = library.tse_scan_f32(
        batch, length, d_inner, d_state, 0, d_inner,
        *(u.data_ptr(), u.stride(0), u.stride(2)),
        *(delta.data_ptr(), delta.stride(0), delta.stride(2)),
        A_t.data_ptr(),
        *(B.data_ptr(), B.stride(0), B.stride(2)),
        *(C.data_ptr(), C.stride(0), C.stride(2)),
        address(D),
        address(z), *((0, 0) if z is None else (z.stride(0), z.stride(2))),
        address(bias), int(delta_softplus),
        *(y.data_ptr(), y.stride(0), y.stride(1)),
        last.data_ptr(), int(initial_state is not None), kernels.threads(batch * length * d_inner),
    )  # fmt: skip
    if status:
        raise ValueError(f"the cpu scan kernel takes d_state <= {MAX_STATE}, got {d_state}")
    return y.transpose(1, 2), last
