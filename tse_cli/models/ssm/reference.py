"""The pure-PyTorch selective scans: the `naive` loop (test oracle, benchmark baseline) and the `reference` scan.

Inputs are already in the compute dtype, delta already effective (bias and softplus applied): u, delta
(batch, d_inner, length); A (d_inner, d_state); B, C (batch, d_state, length); h0 (batch, d_inner, d_state) or
None. Each returns y (batch, d_inner, length) without the D skip and the z gate, and the last state.

`reference_scan` picks the algorithm. Decays and inputs are computed for a whole segment in batched operations;
the recurrence is one fused multiply-add per step, run for K chunks at once (K > 1 for small layers, where
per-operation overhead dominates), then a short loop carries the state across chunks and one pass adds it in.
Segments are cache-sized on CPU; under autograd each segment is recomputed in the backward pass (activation
checkpointing), so memory stays bounded for any length. Without autograd, short chunks (streaming) and, for
time-major inputs (d_inner innermost in memory, as the Mamba mixer passes them), layers wide enough that the
chunked loop would run a single chunk anyway (batch * d_inner * d_state >= LOOP_ELEMENTS) skip all that: one
in-place loop over time-major per-step states, piece by piece of up to STREAM_LENGTH steps (2048 steps at
d_inner 512: 1.2x faster than the chunked path on one thread, 1.4-2.1x on two; for (batch, d_inner,
length)-contiguous inputs it would be 5x slower).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from tse_cli.models.ssm.common import tracks_grad
from tse_cli.models.streaming import scratch, transposed

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


def reference_scan(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor | None, chunk_size: int | None = None
) -> tuple[Tensor, Tensor]:
    """The `reference` backend: in pieces (`pieces_core`) for streamed chunks and wide time-major layers without
    autograd, the plain loop below SHORT_LENGTH steps, else the chunked, segmented scan (`reference_core`).
    `chunk_size`: the chunk length of the chunked scan (None picks one, and allows the other two)."""
    length, wide = u.shape[-1], u.shape[0] * u.shape[1] * A.shape[1] >= LOOP_ELEMENTS
    time_major = u.stride(1) == 1 and delta.stride(1) == 1  # (batch, length, d_inner) memory, as Mamba passes
    in_pieces = chunk_size is None and length > 0 and (length <= STREAM_LENGTH or (wide and time_major))
    if in_pieces and not tracks_grad(u, delta, A, B, C, h0):
        return pieces_core(u, delta, A, B, C, h0)
    if chunk_size is None and length <= SHORT_LENGTH:
        return naive_core(u, delta, A, B, C, h0)
    return reference_core(u, delta, A, B, C, h0, chunk_size=chunk_size)


# ---------------------------------------------------------------- naive: one step per time step


def naive_core(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor | None) -> tuple[Tensor, Tensor]:
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


def short_core(
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


def pieces_core(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor | None) -> tuple[Tensor, Tensor]:
    """`short_core` over consecutive pieces of up to STREAM_LENGTH steps (fewer for large batches, so that a piece's
    intermediates stay about PIECE_ELEMENTS values), the state carried from piece to piece."""
    piece = max(8, min(STREAM_LENGTH, PIECE_ELEMENTS // (u.shape[0] * u.shape[1] * A.shape[1])))
    h, ys = h0, []
    for u_p, delta_p, B_p, C_p in zip(*(t.split(piece, dim=-1) for t in (u, delta, B, C)), strict=True):
        y, h = short_core(u_p, delta_p, A, B_p, C_p, h)
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


def reference_core(
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
    track = tracks_grad(u, delta, A, B, C, h0)
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
