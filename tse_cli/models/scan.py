"""Selective-scan backends (Mamba's S6 recurrence) behind one contract, mamba_ssm's layout.

For every batch b, channel d and state n, with time t along the last axis:

    delta_t = softplus(delta_t + delta_bias)            (bias and softplus optional)
    h_t     = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t
    y_t     = C_t . h_t + D * u_t,     y_t *= silu(z_t)  (D and z optional)

Shapes: u, delta, z (batch, d_inner, length); A (d_inner, d_state); B, C (batch, d_state, length); D, delta_bias
(d_inner,); states (batch, d_inner, d_state). Backends:

- `reference`: pure PyTorch, any device, float32/float64 (half types are computed in float32), autograd. Decays
  and inputs are computed for a whole segment in batched operations; the recurrence is one fused multiply-add
  per step, run for K chunks at once (K > 1 for small layers, where per-operation overhead dominates), then a
  short loop carries the state across chunks and one pass adds it in. Segments are cache-sized on CPU;
  under autograd each segment is recomputed in the backward pass (activation checkpointing), so memory stays
  bounded for any length.
  Without autograd, short chunks (streaming) and, for time-major inputs (d_inner innermost in memory, as the
  Mamba mixer passes them), layers wide enough that the chunked loop would run a single chunk anyway
  (batch * d_inner * d_state >= LOOP_ELEMENTS) skip all that: one in-place loop over time-major per-step states,
  piece by piece of up to STREAM_LENGTH steps (2048 steps at d_inner 512: 1.2x faster than the chunked path on
  one thread, 1.4-2.1x on two; for (batch, d_inner, length)-contiguous inputs it would be 5x slower).
- `naive`: the plain sequential loop, one step per time step: the test oracle and the benchmark baseline.
- `cuda`: `mamba_ssm`'s fused kernel (`selective_scan_fn`), for CUDA tensors when `mamba_ssm` imports.
- `triton`: the project's own fused forward/backward kernels (`tse_cli.models.scan_triton`), for CUDA tensors
  when Triton imports (it comes with torch's CUDA wheels); also takes an initial state and propagates gradients
  through both states. On CPU only under Triton's interpreter (TRITON_INTERPRET=1), for tests.

`selective_scan_step` is the streaming form: state in, chunk of any length >= 1, outputs and state out.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from tse_cli.models.streaming import scratch, transposed

BACKENDS = ("auto", "reference", "naive", "cuda", "triton")
ENV_VAR = "TSE_SCAN_BACKEND"  # overrides backend="auto" (e.g. TSE_SCAN_BACKEND=naive)

# Elements (batch * d_inner * d_state * time) of one reference segment: its intermediates stay in the CPU's
# L2 cache (float32: 1 MiB each): several times faster here than streaming long tensors through memory.
SEGMENT_ELEMENTS = 1 << 18
# On a GPU the segment only bounds memory (256 MiB per float32 intermediate): fewer, larger kernel launches.
CUDA_SEGMENT_ELEMENTS = 1 << 26
# The loop inside chunks should touch at least this many values per operation (see auto_chunk_size).
LOOP_ELEMENTS = 1 << 13
# Below this length the chunk machinery costs more than it saves: the reference runs the plain loop.
SHORT_LENGTH = 4
# Without autograd, pieces of this many steps (streamed chunks: 13 frames for 416 samples) run as one in-place
# loop over a time-major state tensor, with no segments, chunks or copies: fastest for short chunks and wide
# layers (measured 16-128 at d_inner 512, d_state 16, batch 1 and 4: 64 best).
STREAM_LENGTH = 64
# Longer inputs run that loop piece by piece: pieces of about this many values per intermediate (per-step states,
# decays), at least 8 and at most STREAM_LENGTH steps (measured at d_inner 512, d_state 16, batch 1-16, 1-2 threads).
PIECE_ELEMENTS = 1 << 19

# ---------------------------------------------------------------- backend selection


@functools.cache
def _mamba_selective_scan() -> Callable | None:
    """mamba_ssm's fused scan, or None when it does not import (it needs its compiled CUDA extension)."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # ImportError, or OSError/RuntimeError from a broken or mismatched compiled extension
        return None
    return selective_scan_fn


def mamba_ssm_available() -> bool:
    """True when `mamba_ssm`'s CUDA scan imports (only ever tried for CUDA tensors)."""
    return _mamba_selective_scan() is not None


@functools.cache
def _triton_module():
    """`tse_cli.models.scan_triton`, or None when Triton does not import (e.g. torch's CPU-only wheels)."""
    try:
        from tse_cli.models import scan_triton
    except Exception:  # ImportError, or a broken Triton install failing in its own import
        return None
    return scan_triton


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


def resolve_backend(backend: str = "auto", tensor: Tensor | None = None) -> str:
    """The concrete backend (`reference`, `naive`, `cuda` or `triton`) for a scan over `tensor`'s device and dtype.

    `auto` reads the environment variable TSE_SCAN_BACKEND first; then, for CUDA tensors in float32/float16/
    bfloat16, picks `cuda` when mamba_ssm imports, else `triton` when Triton does and its kernels have not failed
    here (a one-time notice when neither imports); `reference` otherwise. An explicit `cuda` or `triton` that
    cannot run (CPU tensors, float64, missing package, a kernel error) is an error, never a silent fallback.
    """
    source = "backend"
    if backend == "auto" and os.environ.get(ENV_VAR):
        backend, source = os.environ[ENV_VAR], ENV_VAR
    if backend not in BACKENDS:
        raise ValueError(f"unknown scan backend {backend!r} (from {source}); choose one of {', '.join(BACKENDS)}")
    on_cuda = tensor is not None and tensor.is_cuda
    if backend == "auto":
        if not on_cuda or tensor.dtype == torch.float64:  # the fused kernel has no float64
            return "reference"
        if mamba_ssm_available():
            return "cuda"
        if triton_available():
            return "reference" if _TRITON_FAILURE else "triton"
        _notice_no_fused_scan()
        return "reference"
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


# ---------------------------------------------------------------- public entry points


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
    The `cuda` backend does not propagate gradients through the returned last state (mamba_ssm's limitation).
    """
    if u.dim() != 3 or delta.shape != u.shape or B.dim() != 3 or C.shape != B.shape:
        raise ValueError(
            f"selective_scan: expected u, delta (batch, d_inner, length) and B, C (batch, d_state, length), "
            f"got u {tuple(u.shape)}, delta {tuple(delta.shape)}, B {tuple(B.shape)}, C {tuple(C.shape)}"
        )
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"selective_scan: chunk_size must be >= 1, got {chunk_size}")
    name = resolve_backend(backend, u)
    if name in ("cuda", "triton"):
        fused = _cuda_scan if name == "cuda" else _triton_module().triton_scan
        try:
            y, last = fused(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state)
            return (y, last) if return_last_state else y
        except Exception as err:  # re-raised unless it is the auto-selected Triton failing on this machine
            chosen = backend == "auto" and not os.environ.get(ENV_VAR)
            if name != "triton" or not chosen or isinstance(err, torch.OutOfMemoryError):
                raise
            _fall_back_from_triton(err)
            name = "reference"

    compute = torch.float64 if u.dtype == torch.float64 else torch.float32
    u_c = u.to(compute)
    delta_c = _effective_delta(delta, delta_bias, delta_softplus, compute)
    h0 = None if initial_state is None else initial_state.to(compute)
    args = (u_c, delta_c, A.to(compute), B.to(compute), C.to(compute), h0)
    length, wide = u.shape[-1], u.shape[0] * u.shape[1] * A.shape[1] >= LOOP_ELEMENTS
    time_major = u_c.stride(1) == 1 and delta_c.stride(1) == 1  # (batch, length, d_inner) memory, as Mamba passes
    in_pieces = chunk_size is None and length > 0 and (length <= STREAM_LENGTH or (wide and time_major))
    if name == "reference" and in_pieces and not _tracks_grad(*args):
        y, last = _pieces_core(*args)
    elif name == "naive" or (chunk_size is None and length <= SHORT_LENGTH):
        y, last = _naive_core(*args)
    else:
        y, last = _reference_core(*args, chunk_size=chunk_size)
    y = _skip_and_gate(y, u_c, D, z).to(u.dtype)
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
    `in_place`: the new state is written into `state` (and returned). Short chunks on the reference backend
    without autograd then run without allocating inside a streamer's `Scratch.active()` (y is a scratch tensor,
    valid until the streamer's next chunk): `selective_scan`'s steps, with the intermediates in scratch memory.
    """
    compute = torch.float64 if u.dtype == torch.float64 else torch.float32
    fast = in_place and u.shape[-1] <= STREAM_LENGTH and state.dtype == u.dtype == compute
    fast = fast and resolve_backend(backend, u) == "reference" and not _tracks_grad(u, delta, A, B, C, D, z, state)
    if not fast:
        y, last = selective_scan(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, state, return_last_state=True, backend=backend
        )
        return (y, state.copy_(last)) if in_place else (y, last)
    delta = _effective_delta(delta, delta_bias, delta_softplus, compute)
    y, _ = _short_core(u, delta, A.to(compute), B, C, state, last=state)
    return _skip_and_gate(y, u, D, z), state


# ---------------------------------------------------------------- shared pieces


# Inside a streamer's `Scratch.active()` these write into scratch tensors (`scratch` gives None elsewhere, and the
# operations allocate as usual). F.softplus and F.silu have no out= argument: torch._C._nn's are the functions
# they call.


def _effective_delta(delta: Tensor, bias: Tensor | None, softplus: bool, dtype: torch.dtype) -> Tensor:
    """delta + bias, through softplus when asked, in `dtype`: (batch, d_inner, length)."""
    delta = delta.to(dtype)
    if bias is not None:
        delta = torch.add(delta, bias.to(dtype)[:, None], out=scratch(delta))
    return torch._C._nn.softplus(delta, out=scratch(delta)) if softplus else delta


def _skip_and_gate(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None) -> Tensor:
    """y + D * u, then times silu(z): (batch, d_inner, length) in y's dtype."""
    if D is not None:
        y = torch.addcmul(y, u, D.to(y.dtype)[:, None], out=scratch(y))
    if z is not None:
        y = torch.mul(y, torch._C._nn.silu(z.to(y.dtype), out=scratch(z)), out=scratch(y))
    return y


# ---------------------------------------------------------------- naive: one step per time step


def _naive_core(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor | None) -> tuple[Tensor, Tensor]:
    """The recurrence as written: y (batch, d_inner, length) without D/z, and the last state."""
    batch, d_inner, length = u.shape
    h = u.new_zeros(batch, d_inner, A.shape[1]) if h0 is None else h0
    du = delta * u
    ys = []
    for t in range(length):
        h = torch.exp(delta[:, :, t, None] * A) * h + du[:, :, t, None] * B[:, None, :, t]
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, :, t]))
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(batch, d_inner, 0)
    return y, h


# ---------------------------------------------------------------- short: streamed chunks, no autograd


def _tracks_grad(*tensors: Tensor | None) -> bool:
    """Autograd is recording and one of `tensors` requires a gradient."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _short_core(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor | None, last: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The recurrence for a short chunk, in place: y (batch, d_inner, length) without D/z, and the last state.

    Per-step states are laid out (batch, length, d_state, d_inner), d_inner innermost, so every element-wise
    operation runs over long contiguous rows (2x faster than d_state innermost). They start as the inputs
    delta * B * u and become the states one step at a time; the outputs are one batched product with C.
    `last`: where the last state goes (it may be h0); given, the intermediates and y are scratch tensors
    (`tse_cli.models.streaming.scratch`) when a streamer runs a chunk, which is why the state must be copied out.
    """

    def work(shape: tuple[int, ...]) -> Tensor | None:
        return None if last is None else scratch(u, shape)

    (batch, d_inner, length), d_state = u.shape, A.shape[1]
    delta_t = delta.transpose(1, 2)[:, :, None, :]  # (batch, length, 1, d_inner)
    decay = torch.mul(delta_t, transposed(A), out=work((batch, length, d_state, d_inner))).exp_()
    states = torch.mul(delta_t, u.transpose(1, 2)[:, :, None, :], out=work((batch, length, 1, d_inner)))
    states = torch.mul(states, B.transpose(1, 2)[..., None], out=work((batch, length, d_state, d_inner)))
    steps, decays = states.unbind(1), decay.unbind(1)  # views, one per time step
    if h0 is not None:
        steps[0].addcmul_(decays[0], h0.transpose(1, 2))
    for t in range(1, len(steps)):
        steps[t].addcmul_(decays[t], steps[t - 1])
    y = torch.matmul(C.transpose(1, 2)[:, :, None, :], states, out=work((batch, length, 1, d_inner)))
    y = y.squeeze(-2).transpose(1, 2)  # (batch, d_inner, length)
    return y, steps[-1].transpose(1, 2) if last is None else last.copy_(steps[-1].transpose(1, 2))


def _pieces_core(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor | None) -> tuple[Tensor, Tensor]:
    """`_short_core` over consecutive pieces of up to STREAM_LENGTH steps (fewer for large batches, so that a piece's
    intermediates stay about PIECE_ELEMENTS values), the state carried from piece to piece."""
    piece = max(8, min(STREAM_LENGTH, PIECE_ELEMENTS // (u.shape[0] * u.shape[1] * A.shape[1])))
    h, ys = h0, []
    for u_p, delta_p, B_p, C_p in zip(*(t.split(piece, dim=-1) for t in (u, delta, B, C)), strict=True):
        y, h = _short_core(u_p, delta_p, A, B_p, C_p, h)
        ys.append(y)
    return (ys[0] if len(ys) == 1 else torch.cat(ys, dim=-1)), h


# ---------------------------------------------------------------- reference: chunked, segmented


def auto_chunk_size(length: int, step_elements: int) -> int:
    """Chunk length for a segment of `length` steps of `step_elements` (batch * d_inner * d_state) values each.

    The loop inside chunks runs one operation per step over all K chunks: K just large enough that it touches
    LOOP_ELEMENTS values (less Python overhead per value), at most sqrt(length) (then the loop across chunks
    is as long as the loop inside them). Large layers get K = 1: one chunk, no carry/correction pass at all.
    """
    chunks = max(1, min(math.isqrt(max(length, 1)), -(-LOOP_ELEMENTS // step_elements)))
    return max(1, -(-length // chunks))


def _reference_core(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor | None, chunk_size: int | None = None
) -> tuple[Tensor, Tensor]:
    """Chunked scan over cache-sized (CPU) or memory-bounded (GPU) segments.

    Returns y (batch, d_inner, length) without D/z, and the last state.
    """
    batch, d_inner, length = u.shape
    budget = CUDA_SEGMENT_ELEMENTS if u.is_cuda else SEGMENT_ELEMENTS
    step_elements = batch * d_inner * A.shape[1]
    segment = max(1, budget // step_elements)
    chunk = chunk_size or auto_chunk_size(min(length, segment), step_elements)
    segment = max(chunk, segment // chunk * chunk)
    track = _tracks_grad(u, delta, A, B, C, h0)
    # time-major (length, batch, channels) copies: segments and chunks are then views with contiguous steps
    delta, du, B, C = (t.permute(2, 0, 1).contiguous() for t in (delta, delta * u, B, C))
    # Carry the state across segments; under autograd each segment is recomputed in the backward pass, so only
    # the segments' boundary states are kept.
    # (split, not slicing: its backward assembles the gradient once instead of a full-length tensor per segment)
    h, ys = h0, []
    for delta_s, du_s, B_s, C_s in zip(*(t.split(segment) for t in (delta, du, B, C)), strict=True):
        if track and length > segment:
            y, h = checkpoint(_chunked_scan, delta_s, du_s, A, B_s, C_s, h, chunk, track, use_reentrant=False)
        else:
            y, h = _chunked_scan(delta_s, du_s, A, B_s, C_s, h, chunk, track)
        ys.append(y)
    return torch.cat(ys).permute(1, 2, 0), h


def _chunked_scan(
    delta: Tensor, du: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor | None, chunk: int, track: bool
) -> tuple[Tensor, Tensor]:
    """One segment, time-major: delta, du = delta * u (length, batch, d_inner); B, C (length, batch, d_state).

    Returns y (length, batch, d_inner) without D/z, and the last state (batch, d_inner, d_state).
    The length is padded to K chunks of T steps with delta = 0 (identity steps: decay 1, no input). Per-step
    tensors are laid out (T, K, batch, d_inner, d_state), so each loop step updates one contiguous slice.
    Decays are products of per-step factors exp(delta * A) <= 1: never exp of a large positive number.
    `track`: autograd is recording (no in-place updates then).
    """
    length, batch, d_inner = delta.shape
    T = min(chunk, length)
    K = -(-length // T)
    pad = K * T - length
    if pad:
        delta, du, B, C = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (delta, du, B, C))

    def chunked(t: Tensor) -> Tensor:  # (K*T, batch, c) -> (T, K, batch, c)
        return t.view(K, T, *t.shape[1:]).transpose(0, 1)

    decay = torch.exp(chunked(delta)[..., None] * A)  # (T, K, batch, d_inner, d_state): per-step decay
    x = chunked(du)[..., None] * chunked(B)[..., None, :]  # per-step input delta * B * u
    first = x[0].clone() if track and h0 is not None else x[0]
    if h0 is not None:  # the incoming state enters chunk 0 through its first step
        first[0].addcmul_(decay[0, 0], h0)

    # 1. scan inside every chunk at once, chunk 0 from the incoming state, the others from zero
    if track:  # unbind: one backward node for all steps (indexing x[t] would add a full-size gradient per step)
        hs = [first]
        for x_t, decay_t in zip(x.unbind(0)[1:], decay.unbind(0)[1:], strict=True):
            hs.append(torch.addcmul(x_t, decay_t, hs[-1]))
        states = torch.stack(hs)
    else:
        for t in range(1, T):
            x[t].addcmul_(decay[t], x[t - 1])
        states = x

    # 2. carry the state across chunks: chunk k >= 1 adds (decay since its start) * (state entering it)
    h = states[-1, 0]
    if K > 1:
        since_start = decay[:, 1:].cumprod(0)  # (T, K - 1, batch, d_inner, d_state)
        entering = []
        for local_k, through_k in zip(states[-1, 1:].unbind(0), since_start[-1].unbind(0), strict=True):
            entering.append(h)
            h = torch.addcmul(local_k, through_k, h)
        entering = torch.stack(entering)
        if track:
            states = torch.cat([states[:, :1], torch.addcmul(states[:, 1:], since_start, entering)], dim=1)
        else:
            states[:, 1:].addcmul_(since_start, entering)

    # 3. outputs y_t = C_t . h_t
    y = torch.matmul(states, chunked(C)[..., None]).squeeze(-1)  # (T, K, batch, d_inner)
    return y.transpose(0, 1).reshape(K * T, batch, d_inner)[:length], h


# ---------------------------------------------------------------- cuda: mamba_ssm's fused kernel


def _cuda_scan(
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
    scan = _mamba_selective_scan()
    A32 = A.float()
    D32 = None if D is None else D.float()
    bias32 = None if delta_bias is None else delta_bias.float()
    if initial_state is None:
        return scan(u, delta, A32, B, C, D32, z, bias32, delta_softplus, return_last_state=True)
    y, last = scan(u, delta, A32, B, C, D32, None, bias32, delta_softplus, return_last_state=True)
    h0 = initial_state.float()
    decay = torch.exp(_effective_delta(delta, delta_bias, delta_softplus, torch.float32).cumsum(-1)[..., None] * A32)
    y = y.float() + torch.einsum("bdln,bdn,bnl->bdl", decay, h0, C.float())
    last = last.float() + decay[:, :, -1] * h0
    return _skip_and_gate(y, u.float(), None, z).to(u.dtype), last
