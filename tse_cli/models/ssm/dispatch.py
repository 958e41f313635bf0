"""Backend selection and the public entry points of the selective scan (see `tse_cli.models.ssm`).

`resolve_backend` turns `auto` (or TSE_SCAN_BACKEND) into a concrete backend for the tensors at hand;
`selective_scan` checks the shapes, runs the fused backends on the raw inputs (falling back from Triton kernels
that fail on this machine, once, when `auto` chose them) and the pure-PyTorch ones on compute-dtype inputs;
`selective_scan_step` is the streaming form, allocation-free for short chunks on the reference backend.
"""

from __future__ import annotations

import functools
import os
import warnings

import torch
from torch import Tensor

from tse_cli.models.ssm import cpu_kernel
from tse_cli.models.ssm.common import compute_dtype, effective_delta, skip_and_gate, tracks_grad
from tse_cli.models.ssm.mamba_adapter import mamba_scan, mamba_ssm_available
from tse_cli.models.ssm.reference import STREAM_LENGTH, naive_core, reference_scan, short_core

BACKENDS = ("auto", "reference", "naive", "cpu", "cuda", "triton")
ENV_VAR = "TSE_SCAN_BACKEND"  # overrides backend="auto" (e.g. TSE_SCAN_BACKEND=naive)

# ---------------------------------------------------------------- backend selection


@functools.cache
def _triton_module():
    """`tse_cli.models.ssm.triton_kernels`, or None when Triton does not import (e.g. torch's CPU-only wheels)."""
    try:
        from tse_cli.models.ssm import triton_kernels
    except Exception:  # ImportError, or a broken Triton install failing in its own import
        return None
    return triton_kernels


def triton_available() -> bool:
    """True when the project's Triton kernels import (CUDA tensors; any tensors under TRITON_INTERPRET=1)."""
    return _triton_module() is not None


# The error of the Triton kernels when `auto` picked them and they failed to compile or launch on this machine
# (then `auto` uses the reference scan for the rest of the process); empty while they work.
_TRITON_FAILURE: list[Exception] = []


def _fall_back_from_triton(err: Exception) -> None:
    """Remember that the auto-selected Triton kernels failed here, and say so once."""
    _TRITON_FAILURE.append(err)
    warnings.warn(
        f"tse: the Triton scan kernels failed on this machine ({type(err).__name__}: {str(err)[:200]}); using the "
        "pure-PyTorch reference scan instead (TSE_SCAN_BACKEND=triton shows the full error)",
        RuntimeWarning,
        stacklevel=3,
    )


@functools.cache
def _notice_no_fused_scan() -> None:
    warnings.warn(
        "tse: CUDA tensors but neither mamba_ssm (pip install 'tse-cli[cuda]') nor Triton imports; "
        "using the slower pure-PyTorch reference scan",
        RuntimeWarning,
        stacklevel=4,
    )


def resolve_backend(backend: str = "auto", tensor: Tensor | None = None, *, grad: bool = False) -> str:
    """The concrete backend (`reference`, `naive`, `cpu`, `cuda` or `triton`) for a scan over `tensor`'s device
    and dtype; `grad`: the scan must propagate gradients.

    `auto` reads the environment variable TSE_SCAN_BACKEND first; then, for CUDA tensors in float32/float16/
    bfloat16, picks `cuda` when mamba_ssm imports, else `triton` when Triton does and its kernels have not failed
    here (a one-time notice when neither imports); for CPU float32 tensors without gradients, `cpu` when its
    kernel builds here (`cpu_kernel.py`; silently `reference` when no C compiler can); `reference` otherwise. An
    explicit `cpu`, `cuda` or `triton` that cannot run (wrong device or dtype, gradients through `cpu`, missing
    package or compiler, a kernel error) is an error, never a silent fallback.
    """
    source = "backend"
    if backend == "auto" and os.environ.get(ENV_VAR):
        backend, source = os.environ[ENV_VAR], ENV_VAR
    if backend not in BACKENDS:
        raise ValueError(f"unknown scan backend {backend!r} (from {source}); choose one of {', '.join(BACKENDS)}")
    on_cuda = tensor is not None and tensor.is_cuda
    if backend == "auto":
        if not on_cuda:
            cpu32 = tensor is not None and tensor.dtype == torch.float32 and not grad
            return "cpu" if cpu32 and cpu_kernel.cpu_kernel_available() else "reference"
        if tensor.dtype == torch.float64:  # the fused kernels have no float64
            return "reference"
        if mamba_ssm_available():
            return "cuda"
        if triton_available():
            return "reference" if _TRITON_FAILURE else "triton"
        _notice_no_fused_scan()
        return "reference"
    if backend == "cpu":
        if on_cuda or (tensor is not None and tensor.dtype != torch.float32) or grad:
            raise ValueError(f"scan backend 'cpu' (from {source}) runs CPU float32 tensors without gradients only")
        if not cpu_kernel.cpu_kernel_available():
            raise RuntimeError(f"scan backend 'cpu' (from {source}) could not be built: {cpu_kernel.build_error()}")
    if backend == "cuda":
        if not on_cuda:
            raise ValueError(f"scan backend 'cuda' (from {source}) needs CUDA tensors")
        if not mamba_ssm_available():
            raise RuntimeError(f"scan backend 'cuda' (from {source}) needs mamba_ssm: pip install 'tse-cli[cuda]'")
    if backend == "triton":
        if not triton_available():
            raise RuntimeError(
                f"scan backend 'triton' (from {source}) needs Triton (it comes with torch's CUDA wheels)"
            )
        if not on_cuda and not _triton_module().interpreting():
            raise ValueError(
                f"scan backend 'triton' (from {source}) needs CUDA tensors (or TRITON_INTERPRET=1 for Triton's CPU "
                "interpreter, set before tse is imported)"
            )
        if tensor is not None and tensor.dtype == torch.float64:
            raise ValueError(f"scan backend 'triton' (from {source}) computes in float32: float64 needs 'reference'")
    return backend


# ---------------------------------------------------------------- input checks


_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def check_inputs(
    caller: str,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    state: Tensor | None,
    state_name: str = "state",
) -> None:
    """Raise ValueError naming the tensors when the scan inputs do not have the contract's shapes (module
    docstring) or are not real floating point: every backend computes in real arithmetic, so a complex A (or
    input) would silently lose its imaginary part. Called for every streamed chunk: the passing case is kept to
    straight-line comparisons."""
    given = (u, delta, A, B, C, D, z, delta_bias, state)
    if u.dim() == 3 and A.dim() == 2:
        (batch, d_inner, length), d_state = u.shape, A.shape[1]
        if (
            delta.shape == u.shape
            and A.shape[0] == d_inner
            and B.shape == (batch, d_state, length)
            and C.shape == B.shape
            and (D is None or D.shape == (d_inner,))
            and (z is None or z.shape == u.shape)
            and (delta_bias is None or delta_bias.shape == (d_inner,))
            and (state is None or state.shape == (batch, d_inner, d_state))
            and all(t is None or t.is_floating_point() for t in given)
        ):
            return
        expected = [u.shape, u.shape, (d_inner, d_state), (batch, d_state, length), (batch, d_state, length)]
        expected += [(d_inner,), u.shape, (d_inner,), (batch, d_inner, d_state)]
    else:
        expected = ["(batch, d_inner, length)" if u.dim() != 3 else u.shape, None]
        expected += ["(d_inner, d_state)" if A.dim() != 2 else A.shape] + [None] * 6
    odd = [
        f"{name} {t.dtype}"
        for name, t in zip((*_NAMES, state_name), given, strict=True)
        if t is not None and not t.is_floating_point()
    ]
    if odd:
        hint = " (a complex A is not supported: the parametrisation is real, A = -exp(A_log))" if A.is_complex() else ""
        raise ValueError(f"{caller}: the scan takes real floating-point tensors, got {', '.join(odd)}{hint}")
    wrong = [
        f"{name} {tuple(t.shape)} (expected {shape if isinstance(shape, str) else tuple(shape)})"
        for name, t, shape in zip((*_NAMES, state_name), given, expected, strict=True)
        if t is not None and shape is not None and t.shape != shape
    ]
    raise ValueError(
        f"{caller}: shapes do not fit u (batch, d_inner, length) {tuple(u.shape)} and A (d_inner, d_state) "
        f"{tuple(A.shape)}: {', '.join(wrong)}"
    )


# ---------------------------------------------------------------- public entry points


def _concrete(backend: str, inputs: tuple[Tensor | None, ...], grad: bool) -> str:
    """`resolve_backend` for these scan inputs (u first, A third; `grad`: one of them tracks a gradient): `auto`
    turns to `reference` where the `cpu` kernel cannot take them (a dtype other than float32 among them, a
    d_state over its limit); an explicit `cpu` then raises ValueError."""
    u, A = inputs[0], inputs[2]
    name = resolve_backend(backend, u, grad=grad)
    if name != "cpu" or cpu_kernel.supports(*inputs, d_state=A.shape[1]):
        return name
    if backend == "auto" and not os.environ.get(ENV_VAR):
        return "reference"
    dtypes = sorted({str(t.dtype) for t in inputs if t is not None})
    raise ValueError(
        f"scan backend 'cpu' takes float32 CPU tensors and d_state <= {cpu_kernel.MAX_STATE}, got "
        f"{', '.join(dtypes)} and d_state {A.shape[1]}"
    )


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: Tensor | None = None,
    return_last_state: bool = False,
    *,
    backend: str = "auto",
    chunk_size: int | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Run the selective scan (see the module docstring for the recurrence and shapes).

    Returns y (batch, d_inner, length) in u's dtype, and with `return_last_state` also the state after the last
    step (batch, d_inner, d_state) in the compute dtype (float64 for float64 inputs, float32 otherwise).
    `initial_state` (batch, d_inner, d_state) is the state before the first step (zeros when None).
    `chunk_size` (reference backend only): the chunk length; None picks one from the length.
    The `cuda` backend does not propagate gradients through the returned last state (mamba_ssm's limitation);
    the `cpu` backend propagates none (inference only: `auto` never picks it under autograd).
    """
    check_inputs("selective_scan", u, delta, A, B, C, D, z, delta_bias, initial_state, "initial_state")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"selective_scan: chunk_size must be >= 1, got {chunk_size}")
    inputs = (u, delta, A, B, C, D, z, delta_bias, initial_state)
    name = _concrete(backend, inputs, tracks_grad(*inputs))
    if name == "cpu":
        y, last = cpu_kernel.cpu_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state)
        return (y, last) if return_last_state else y
    if name in ("cuda", "triton"):
        fused = mamba_scan if name == "cuda" else _triton_module().triton_scan
        try:
            y, last = fused(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state)
            return (y, last) if return_last_state else y
        except Exception as err:  # re-raised unless it is the auto-selected Triton failing on this machine
            chosen = backend == "auto" and not os.environ.get(ENV_VAR)
            if name != "triton" or not chosen or isinstance(err, torch.OutOfMemoryError):
                raise
            _fall_back_from_triton(err)
            name = "reference"

    compute = compute_dtype(u.dtype)
    u_c = u.to(compute)
    delta_c = effective_delta(delta, delta_bias, delta_softplus, compute)
    h0 = None if initial_state is None else initial_state.to(compute)
    args = (u_c, delta_c, A.to(compute), B.to(compute), C.to(compute), h0)
    y, last = naive_core(*args) if name == "naive" else reference_scan(*args, chunk_size=chunk_size)
    y = skip_and_gate(y, u_c, D, z).to(u.dtype)
    return (y, last) if return_last_state else y


def selective_scan_step(
    state: Tensor,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    *,
    backend: str = "auto",
    in_place: bool = False,
) -> tuple[Tensor, Tensor]:
    """Streaming update: from `state` (batch, d_inner, d_state), scan a chunk of any length >= 1.

    Returns (y (batch, d_inner, length), new state). Feeding a sequence chunk by chunk gives the same outputs and
    final state as one `selective_scan` over the whole sequence (up to float rounding).
    `in_place`: the new state is written into `state` (and returned). Without autograd, the `cpu` backend and
    short chunks on the reference backend then run without allocating inside a streamer's `Scratch.active()` (y
    is a scratch tensor, valid until the streamer's next chunk); the reference runs `selective_scan`'s steps with
    the intermediates in scratch memory.
    """
    compute = compute_dtype(u.dtype)
    inputs = (u, delta, A, B, C, D, z, delta_bias, state)
    grad = tracks_grad(*inputs)
    name = _concrete(backend, inputs, grad)
    if in_place and name == "cpu" and state.is_contiguous():
        check_inputs("selective_scan_step", u, delta, A, B, C, D, z, delta_bias, state)
        y, _ = cpu_kernel.cpu_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, state, last=state)
        return y, state
    fast = in_place and name == "reference" and not grad and u.shape[-1] <= STREAM_LENGTH
    fast = fast and state.dtype == u.dtype == compute
    if not fast:
        y, last = selective_scan(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, state, return_last_state=True, backend=backend
        )
        return (y, state.copy_(last)) if in_place else (y, last)
    check_inputs("selective_scan_step", u, delta, A, B, C, D, z, delta_bias, state)
    delta = effective_delta(delta, delta_bias, delta_softplus, compute)
    y, _ = short_core(u, delta, A.to(compute), B, C, state, last=state)
    return skip_and_gate(y, u, D, z), state
