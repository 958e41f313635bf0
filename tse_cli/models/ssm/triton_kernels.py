"""The `triton` selective-scan backend: fused forward and backward kernels for CUDA tensors, written in Triton.

Same contract as `tse_cli.models.ssm.selective_scan` (mamba_ssm's layout, any strides): u, delta, z
(batch, d_inner, length); A (d_inner, d_state); B, C (batch, d_state, length); D, delta_bias (d_inner,);
initial and last state (batch, d_inner, d_state). Inputs may be float32, float16 or bfloat16; everything is
computed in float32 and y comes back in u's dtype. Unlike mamba_ssm's kernel it takes an initial state and
propagates gradients through both the initial and the returned last state.

Layout of the work: one program per (block of BLOCK_D channels, batch item) walks the sequence in chunks of
BLOCK_T steps. Inside a chunk the recurrence h_t = a_t h_{t-1} + x_t (a = exp(delta A), x = delta B u) is one
`tl.associative_scan` over time of (BLOCK_D, d_state, BLOCK_T) tiles; the state entering the chunk is added
through the scanned decay products. The forward pass stores the state at the end of every chunk (that is all
the backward pass keeps: it recomputes the chunk's states from it) and writes y = C . h + D u, times silu(z).

The backward pass walks the chunks in reverse with the adjoint G_t = dL/dh_t = C_t g_t + a_{t+1} G_{t+1}
(g = dL/dy before the gate), another associative scan, reversed. Then, with x_t = delta_t B_t u_t and
a_t h_{t-1} = h_t - x_t:
    dB_t = sum_d G_t delta_t u_t      dC_t = sum_d g_t h_t        du_t = sum_n G_t delta_t B_t + D g_t
    ddelta_t = sum_n G_t (B_t u_t + A (h_t - x_t))                dA = sum_{b,t} G_t (h_t - x_t) delta_t
and the chain rule through softplus(delta + delta_bias). Sums over channels (dB, dC) and over batch and time
(dA, dD, ddelta_bias) are written as per-program partials and added up here, so results are deterministic.

On machines without CUDA the kernels run in Triton's interpreter when TRITON_INTERPRET=1 is set before this
module is imported (slow: for tests only; `resolve_backend` never picks it by itself). `compile_report` compiles
both kernels for a GPU architecture on any machine and reports their register use and spills.

(About 420 lines: the two kernels, their shared jit helpers, the autograd wrapper that launches them and the
compile check that inspects them form one unit.)
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from tse_cli.models.ssm.common import effective_delta

BLOCK_D = 16  # channels per program
BLOCK_T = 16  # time steps per chunk (one associative scan of BLOCK_D * d_state * BLOCK_T values)
# warps per program: with d_state 16, ptxas (sm_90) fits both kernels in registers without spills
# (at most 249 registers per thread, 0 spill bytes, for float32 and bfloat16 inputs; see compile_report)
FORWARD_WARPS, BACKWARD_WARPS = 4, 8


def interpreting() -> bool:
    """True when the kernels were built for Triton's CPU interpreter (TRITON_INTERPRET=1 at import)."""
    return type(_forward_kernel).__name__ == "InterpretedFunction"


# ---------------------------------------------------------------- pieces shared by both kernels


@triton.jit
def _combine(a_first, x_first, a_second, x_second):
    """Compose two affine steps h -> a h + x: first, then second."""
    return a_first * a_second, a_second * x_first + x_second


@triton.jit
def _delta_tile(delta_ptr, stride_d, stride_t, bias, offs_d, offs_t, mask, SOFTPLUS: tl.constexpr):
    """(delta + bias, effective delta) as (BLOCK_D, BLOCK_T) float32 tiles; masked steps get delta 0 (identity)."""
    raw = tl.load(delta_ptr + offs_d[:, None] * stride_d + offs_t[None, :] * stride_t, mask=mask, other=0.0)
    raw = raw.to(tl.float32) + bias[:, None]
    delta = raw
    if SOFTPLUS:  # torch's softplus (threshold 20), log1p(e) written as log(1 + e) with its rounding corrected
        e = tl.exp(-tl.abs(raw))
        one_plus = 1.0 + e
        log1p = tl.log(one_plus) - ((one_plus - 1.0) - e) / one_plus
        delta = tl.where(raw > 20.0, raw, tl.maximum(raw, 0.0) + log1p)
    return raw, tl.where(mask, delta, 0.0)


@triton.jit
def _tile(ptr, stride_row, stride_t, offs_row, offs_t, mask):
    """A (rows, BLOCK_T) tile of a (rows, length) slice with any strides, as float32 (0 where masked)."""
    return tl.load(ptr + offs_row[:, None] * stride_row + offs_t[None, :] * stride_t, mask=mask, other=0.0).to(
        tl.float32
    )


@triton.jit
def _optional(ptr, offs, mask, PRESENT: tl.constexpr, SHAPE: tl.constexpr):
    """`ptr[offs]` as float32 (0 where masked), or zeros of SHAPE when that input is absent."""
    values = tl.zeros(SHAPE, dtype=tl.float32)
    if PRESENT:
        values = tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32)
    return values


@triton.jit
def _program_tile(A_ptr, sA_d, sA_n, bias_ptr, d_inner, d_state, HAS_BIAS: tl.constexpr, BLOCK_D: tl.constexpr,
                  BLOCK_N: tl.constexpr):  # fmt: skip
    """This program's channels and states: offsets and masks over channels (BLOCK_D,) and states (BLOCK_N,), their
    (BLOCK_D, BLOCK_N) mask and offsets into a contiguous (d_inner, d_state) state, and A and delta_bias in float32."""
    offs_d = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d, mask_n = offs_d < d_inner, offs_n < d_state
    mask_dn = mask_d[:, None] & mask_n[None, :]
    A = tl.load(A_ptr + offs_d[:, None] * sA_d + offs_n[None, :] * sA_n, mask=mask_dn, other=0.0).to(tl.float32)
    bias = _optional(bias_ptr, offs_d, mask_d, HAS_BIAS, (BLOCK_D,))
    return offs_d, offs_n, mask_d, mask_n, mask_dn, offs_d[:, None] * d_state + offs_n[None, :], A, bias


@triton.jit
def _chunk_states(
    u_ptr, su_d, su_t, delta_ptr, sdl_d, sdl_t, B_ptr, sB_n, sB_t,
    A, bias, h_in, offs_d, offs_n, offs_t, mask_dt, mask_nt, SOFTPLUS: tl.constexpr,
):  # fmt: skip
    """One chunk's inputs and states from the state entering it: u, raw and effective delta (BLOCK_D, BLOCK_T),
    B (BLOCK_N, BLOCK_T), the inputs x = delta B u and the states h, both (BLOCK_D, BLOCK_N, BLOCK_T)."""
    u = _tile(u_ptr, su_d, su_t, offs_d, offs_t, mask_dt)
    raw, delta = _delta_tile(delta_ptr, sdl_d, sdl_t, bias, offs_d, offs_t, mask_dt, SOFTPLUS)
    B = _tile(B_ptr, sB_n, sB_t, offs_n, offs_t, mask_nt)
    decay = tl.exp(delta[:, None, :] * A[:, :, None])
    x = (delta * u)[:, None, :] * B[None, :, :]
    through, h = tl.associative_scan((decay, x), 2, _combine)
    return u, raw, delta, B, x, h + through * h_in[:, :, None]


# ---------------------------------------------------------------- forward


@triton.jit
def _forward_kernel(
    u_ptr, su_b, su_d, su_t, delta_ptr, sdl_b, sdl_d, sdl_t, A_ptr, sA_d, sA_n,
    B_ptr, sB_b, sB_n, sB_t, C_ptr, sC_b, sC_n, sC_t, D_ptr, z_ptr, sz_b, sz_d, sz_t, bias_ptr, h0_ptr,
    y_ptr, sy_b, sy_d, sy_t, states_ptr, ss_b, ss_c, length, chunks, d_inner, d_state,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr,
    SOFTPLUS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    """y (batch, d_inner, length) and the state at the end of every chunk into `states` (batch, chunks, d_inner,
    d_state), or with chunk stride ss_c = 0 only the last state (batch, 1, d_inner, d_state)."""
    b = tl.program_id(1).to(tl.int64)  # 64-bit offsets for large batches
    offs_d, offs_n, mask_d, mask_n, mask_dn, state_offs, A, bias = _program_tile(
        A_ptr, sA_d, sA_n, bias_ptr, d_inner, d_state, HAS_BIAS, BLOCK_D, BLOCK_N
    )
    h = _optional(h0_ptr + b * d_inner * d_state, state_offs, mask_dn, HAS_H0, (BLOCK_D, BLOCK_N))
    u_ptr, delta_ptr, y_ptr = u_ptr + b * su_b, delta_ptr + b * sdl_b, y_ptr + b * sy_b
    B_ptr, C_ptr, z_ptr = B_ptr + b * sB_b, C_ptr + b * sC_b, z_ptr + b * sz_b
    last_step = tl.arange(0, BLOCK_T) == BLOCK_T - 1
    c = 0
    while c < chunks:  # (a while loop: Triton's interpreter cannot range() over a scalar argument with NumPy 2.4)
        offs_t = c * BLOCK_T + tl.arange(0, BLOCK_T)
        mask_t = offs_t < length
        mask_dt, mask_nt = mask_d[:, None] & mask_t[None, :], mask_n[:, None] & mask_t[None, :]
        u, raw, delta, B, x, hs = _chunk_states(
            u_ptr, su_d, su_t, delta_ptr, sdl_d, sdl_t, B_ptr, sB_n, sB_t,
            A, bias, h, offs_d, offs_n, offs_t, mask_dt, mask_nt, SOFTPLUS,
        )  # fmt: skip
        y = tl.sum(hs * _tile(C_ptr, sC_n, sC_t, offs_n, offs_t, mask_nt)[None, :, :], axis=1)
        if HAS_D:
            y += tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)[:, None] * u
        if HAS_Z:
            z = _tile(z_ptr, sz_d, sz_t, offs_d, offs_t, mask_dt)
            y *= z * tl.sigmoid(z)
        tl.store(y_ptr + offs_d[:, None] * sy_d + offs_t[None, :] * sy_t, y, mask=mask_dt)
        # masked steps are identities, so the last column is the state after the chunk's last real step
        h = tl.sum(tl.where(last_step[None, None, :], hs, 0.0), axis=2)
        tl.store(states_ptr + b * ss_b + c * ss_c + state_offs, h, mask=mask_dn)
        c += 1


# ---------------------------------------------------------------- backward


@triton.jit
def _backward_kernel(
    u_ptr, su_b, su_d, su_t, delta_ptr, sdl_b, sdl_d, sdl_t, A_ptr, sA_d, sA_n,
    B_ptr, sB_b, sB_n, sB_t, C_ptr, sC_b, sC_n, sC_t, D_ptr, z_ptr, sz_b, sz_d, sz_t, bias_ptr, h0_ptr,
    states_ptr, dy_ptr, sdy_b, sdy_d, sdy_t, dlast_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr, dfirst_ptr,
    length, chunks, d_inner, d_state,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr,
    HAS_DLAST: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    """Gradients. du, ddelta, dz have the layout of u, delta, z as contiguous (batch, d_inner, length) float32;
    dB, dC are per-block partials (batch, blocks, d_state, length); dA (batch, d_inner, d_state) and dD, dbias
    (batch, d_inner) are per-batch partials; dfirst (batch, d_inner, d_state) is dL/dh_0 (the state after step 0).
    """
    block, b = tl.program_id(0), tl.program_id(1).to(tl.int64)  # 64-bit offsets for large batches
    blocks = tl.num_programs(0)
    offs_d, offs_n, mask_d, mask_n, mask_dn, state_offs, A, bias = _program_tile(
        A_ptr, sA_d, sA_n, bias_ptr, d_inner, d_state, HAS_BIAS, BLOCK_D, BLOCK_N
    )
    Dv = _optional(D_ptr, offs_d, mask_d, HAS_D, (BLOCK_D,))
    # G: the adjoint of the state at the first step after the current chunk (dL/d last state at the end)
    G = _optional(dlast_ptr + b * d_inner * d_state, state_offs, mask_dn, HAS_DLAST, (BLOCK_D, BLOCK_N))
    dA = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    dD = tl.zeros((BLOCK_D,), dtype=tl.float32)
    dbias = tl.zeros((BLOCK_D,), dtype=tl.float32)
    u_ptr, delta_ptr, dy_ptr = u_ptr + b * su_b, delta_ptr + b * sdl_b, dy_ptr + b * sdy_b
    B_ptr, C_ptr, z_ptr = B_ptr + b * sB_b, C_ptr + b * sC_b, z_ptr + b * sz_b
    grads = b * d_inner * length  # du, ddelta, dz: contiguous (batch, d_inner, length)
    partials = (b * blocks + block) * d_state * length  # dB, dC: (batch, blocks, d_state, length)
    first_step = tl.arange(0, BLOCK_T) == 0
    c = chunks - 1
    while c >= 0:
        offs_t = c * BLOCK_T + tl.arange(0, BLOCK_T)
        mask_t = offs_t < length
        mask_dt, mask_nt = mask_d[:, None] & mask_t[None, :], mask_n[:, None] & mask_t[None, :]
        # recompute the chunk's states from the state entering it (the previous chunk's end, or h0)
        previous = states_ptr + (b * chunks + c - 1) * d_inner * d_state + state_offs
        h_in = tl.load(previous, mask=mask_dn & (c > 0), other=0.0)
        if HAS_H0:
            h_in += tl.load(h0_ptr + b * d_inner * d_state + state_offs, mask=mask_dn & (c == 0), other=0.0)
        u, raw, delta, B, x, hs = _chunk_states(
            u_ptr, su_d, su_t, delta_ptr, sdl_d, sdl_t, B_ptr, sB_n, sB_t,
            A, bias, h_in, offs_d, offs_n, offs_t, mask_dt, mask_nt, SOFTPLUS,
        )  # fmt: skip
        C = _tile(C_ptr, sC_n, sC_t, offs_n, offs_t, mask_nt)
        g = _tile(dy_ptr, sdy_d, sdy_t, offs_d, offs_t, mask_dt)
        if HAS_Z:  # y = (C . h + D u) * silu(z)
            z = _tile(z_ptr, sz_d, sz_t, offs_d, offs_t, mask_dt)
            gate = tl.sigmoid(z)
            y = tl.sum(hs * C[None, :, :], axis=1) + Dv[:, None] * u
            dz = g * y * gate * (1.0 + z * (1.0 - gate))
            tl.store(dz_ptr + grads + offs_d[:, None] * length + offs_t[None, :], dz, mask=mask_dt)
            g = g * z * gate
        # the adjoint inside the chunk: G_t = C_t g_t + a_{t+1} G_{t+1}, a reverse scan of (a_{t+1}, C_t g_t)
        _, delta_next = _delta_tile(
            delta_ptr,
            sdl_d,
            sdl_t,
            bias,
            offs_d,
            offs_t + 1,
            mask_d[:, None] & (offs_t + 1 < length)[None, :],
            SOFTPLUS,
        )
        decay_next = tl.exp(delta_next[:, None, :] * A[:, :, None])
        through, Gs = tl.associative_scan((decay_next, C[None, :, :] * g[:, None, :]), 2, _combine, reverse=True)
        Gs += through * G[:, :, None]
        G = tl.sum(tl.where(first_step[None, None, :], Gs, 0.0), axis=2)

        carried = Gs * (hs - x)  # G_t a_t h_{t-1}
        GB = tl.sum(Gs * B[None, :, :], axis=1)
        du = GB * delta + Dv[:, None] * g
        ddelta = GB * u + tl.sum(carried * A[:, :, None], axis=1)
        if SOFTPLUS:
            ddelta *= tl.sigmoid(raw)
        ddelta = tl.where(mask_dt, ddelta, 0.0)
        tl.store(du_ptr + grads + offs_d[:, None] * length + offs_t[None, :], du, mask=mask_dt)
        tl.store(ddelta_ptr + grads + offs_d[:, None] * length + offs_t[None, :], ddelta, mask=mask_dt)
        dA += tl.sum(carried * delta[:, None, :], axis=2)
        dD += tl.sum(g * u, axis=1)
        dbias += tl.sum(ddelta, axis=1)
        part_offs = partials + offs_n[:, None] * length + offs_t[None, :]
        tl.store(dB_ptr + part_offs, tl.sum(Gs * (delta * u)[:, None, :], axis=0), mask=mask_nt)
        tl.store(dC_ptr + part_offs, tl.sum(hs * g[:, None, :], axis=0), mask=mask_nt)
        c -= 1
    tl.store(dA_ptr + b * d_inner * d_state + state_offs, dA, mask=mask_dn)
    tl.store(dD_ptr + b * d_inner + offs_d, dD, mask=mask_d)
    tl.store(dbias_ptr + b * d_inner + offs_d, dbias, mask=mask_d)
    tl.store(dfirst_ptr + b * d_inner * d_state + state_offs, G, mask=mask_dn)


# ---------------------------------------------------------------- autograd wrapper


def _strides(t: Tensor | None, dims: int) -> tuple[int, ...]:
    return t.stride() if t is not None else (0,) * dims


def _common_args(u, delta, A, B, C, D, z, delta_bias, h0) -> list:
    """Pointers and strides of the inputs, in the order both kernels take them (a stand-in for missing ones)."""
    return [
        u, *u.stride(), delta, *delta.stride(), A, *A.stride(), B, *B.stride(), C, *C.stride(),
        u if D is None else D, u if z is None else z, *_strides(z, 3), u if delta_bias is None else delta_bias,
        u if h0 is None else h0,
    ]  # fmt: skip


def _constants(D, z, delta_bias, h0, softplus: bool, d_state: int) -> dict:
    """The kernels' compile-time arguments: which optional inputs exist, and the block sizes."""
    return {
        "HAS_D": D is not None,
        "HAS_Z": z is not None,
        "HAS_BIAS": delta_bias is not None,
        "HAS_H0": h0 is not None,
        "SOFTPLUS": softplus,
        "BLOCK_D": BLOCK_D,
        "BLOCK_N": triton.next_power_of_2(d_state),
        "BLOCK_T": BLOCK_T,
    }


class _SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, softplus, h0):
        batch, d_inner, length = u.shape
        d_state = A.shape[1]
        ctx.h0_dtype = None if h0 is None else h0.dtype
        h0 = None if h0 is None else h0.float().contiguous()
        y = torch.empty_like(u)
        chunks = triton.cdiv(length, BLOCK_T)
        # the backward pass restarts from every chunk's end state; inference keeps only the last one
        keep = chunks if any(ctx.needs_input_grad) else 1
        states = u.new_empty(batch, keep, d_inner, d_state, dtype=torch.float32)
        _forward_kernel[(triton.cdiv(d_inner, BLOCK_D), batch)](
            *_common_args(u, delta, A, B, C, D, z, delta_bias, h0), y, *y.stride(),
            states, states.stride(0), states.stride(1) if keep > 1 else 0, length, chunks, d_inner, d_state,
            **_constants(D, z, delta_bias, h0, softplus, d_state), num_warps=FORWARD_WARPS,
        )  # fmt: skip
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, h0, states)
        ctx.softplus = softplus
        ctx.set_materialize_grads(False)
        return y, states[:, -1].clone()

    @staticmethod
    def backward(ctx, dy, dlast):
        u, delta, A, B, C, D, z, delta_bias, h0, states = ctx.saved_tensors
        batch, d_inner, length = u.shape
        d_state = A.shape[1]
        blocks = triton.cdiv(d_inner, BLOCK_D)
        f32 = {"device": u.device, "dtype": torch.float32}
        dy = torch.zeros_like(u) if dy is None else dy
        du, ddelta = (torch.empty(batch, d_inner, length, **f32) for _ in range(2))
        dz = None if z is None else torch.empty(batch, d_inner, length, **f32)
        dB, dC = (torch.empty(batch, blocks, d_state, length, **f32) for _ in range(2))
        dA, dfirst = (torch.empty(batch, d_inner, d_state, **f32) for _ in range(2))
        dD, dbias = (torch.empty(batch, d_inner, **f32) for _ in range(2))
        dlast = None if dlast is None else dlast.float().contiguous()
        _backward_kernel[(blocks, batch)](
            *_common_args(u, delta, A, B, C, D, z, delta_bias, h0), states, dy, *dy.stride(),
            dy if dlast is None else dlast, du, ddelta, du if dz is None else dz, dB, dC, dA, dD, dbias, dfirst,
            length, states.shape[1], d_inner, d_state,
            **_constants(D, z, delta_bias, h0, ctx.softplus, d_state), HAS_DLAST=dlast is not None,
            num_warps=BACKWARD_WARPS,
        )  # fmt: skip
        dh0 = None
        if h0 is not None:  # h_0 = a_0 h0 + x_0
            delta0 = effective_delta(delta[:, :, :1], delta_bias, ctx.softplus, torch.float32)  # (batch, d_inner, 1)
            dh0 = (dfirst * torch.exp(delta0 * A.float())).to(ctx.h0_dtype)
        return (
            du.to(u.dtype),
            ddelta.to(delta.dtype),
            dA.sum(0).to(A.dtype),
            dB.sum(1).to(B.dtype),
            dC.sum(1).to(C.dtype),
            None if D is None else dD.sum(0).to(D.dtype),
            None if dz is None else dz.to(z.dtype),
            None if delta_bias is None else dbias.sum(0).to(delta_bias.dtype),
            None,
            dh0,
        )


def triton_scan(
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
) -> tuple[Tensor, Tensor]:
    """The selective scan on the Triton kernels: y (batch, d_inner, length) in u's dtype and the last state
    (batch, d_inner, d_state) in float32, both differentiable (see the module docstring for shapes)."""
    if u.shape[-1] == 0:
        last = u.new_zeros(u.shape[0], u.shape[1], A.shape[1], dtype=torch.float32)
        return u.new_zeros(u.shape), last if initial_state is None else initial_state.float() + last
    return _SelectiveScan.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state)


# ---------------------------------------------------------------- ahead-of-time compile check (no GPU needed)


def compile_report(arch: int = 90) -> list[dict]:
    """Compile both kernels for an NVIDIA architecture (90: H100/H200) on any machine, GPU or not, and report
    what ptxas says of each: registers per thread and spill bytes (a spilling kernel is a slow kernel).

    Returns one row per (kernel, input dtype) with keys kernel, dtype, num_warps, registers, spill_bytes.
    Needs the compiled kernels (not under TRITON_INTERPRET=1).
    """
    import re
    import subprocess
    import tempfile

    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import get_ptxas
    from triton.compiler import ASTSource

    if interpreting():
        raise RuntimeError("compile_report needs the compiled kernels: unset TRITON_INTERPRET")
    rows = []
    for dtype in ("fp32", "bf16"):
        kernels = ((_forward_kernel, {}, FORWARD_WARPS), (_backward_kernel, {"HAS_DLAST": True}, BACKWARD_WARPS))
        for kernel, extra, num_warps in kernels:
            constants = _constants(0, 0, 0, 0, True, 16) | extra  # every optional input present, d_state 16
            signature = {
                name: "constexpr" if name in constants else f"*{dtype}" if name.endswith("_ptr") else "i32"
                for name in kernel.arg_names
            }
            source = ASTSource(
                fn=kernel,
                signature=signature,
                constexprs={(kernel.arg_names.index(k),): v for k, v in constants.items()},
            )
            compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})
            with tempfile.TemporaryDirectory() as tmp:
                ptx = f"{tmp}/kernel.ptx"
                with open(ptx, "w") as f:
                    f.write(compiled.asm["ptx"])
                info = subprocess.run(
                    [get_ptxas(arch).path, "-v", f"--gpu-name=sm_{arch}a", ptx, "-o", f"{tmp}/kernel.cubin"],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stderr
            rows.append(
                {
                    "kernel": kernel.__name__,
                    "dtype": dtype,
                    "num_warps": num_warps,
                    "registers": int(re.search(r"Used (\d+) registers", info).group(1)),
                    "spill_bytes": sum(int(n) for n in re.findall(r"(\d+) bytes spill", info)),
                }
            )
    return rows
