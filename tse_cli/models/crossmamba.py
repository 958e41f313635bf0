"""CrossMamba (Mamba as cross-attention) and plain Mamba layers, as published (WuDH2000/CrossMamba).

A Mamba mixer computes, per channel, y_i = sum_{j<=i} C_i . (prod_{j<k<=i} exp(delta_k A)) delta_j B_j u_j: an
attention with queries C, keys B and values u (eq. 20). CrossMamba takes C from the clue (`query`) and B, delta,
u from the mixture (`value`); plain Mamba takes all of them from one sequence.

- `CrossMambaBlock(d_model)`: `block(query, value)` = mixer(norm_query(query), norm(value)) + value, causal.
- `MambaBlock(d_model)`: `block(x)` = mixer(norm(x)) + x, causal.
- `BiCrossMamba` / `BiMamba`: eq. (22) as published, sub-blocks `mamba` (forward) and `mamba_bw` (time-reversed):
  f = mixer(q, v) + v;  b = flip(mixer_bw(flip q, flip v) + flip v);  output f + b, i.e. the sum of the two
  causal blocks, each with its own residual (so v appears twice; checked against the published code's output).
- Causal blocks stream: `state = block.init_state(batch)`, then `out, state = block.step(query, value, state)` on
  chunks of any length equals `block(query, value)` on the concatenation (the state is updated in place).

All sequences are (batch, length, d_model). The scan runs through `tse_cli.models.ssm` (`scan_backend`:
"auto", "reference", "naive", "cpu", "cuda" or "triton"; see `set_scan_backend`). In inference on a CPU the
RMSNorms and the causal conv with its SiLU run as single passes of `tse_cli.models.kernels` when it builds.
"""

from __future__ import annotations

import math
import weakref
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tse_cli.models import kernels
from tse_cli.models.budget import placed
from tse_cli.models.products import linear
from tse_cli.models.ssm import resolve_backend, selective_scan, selective_scan_step
from tse_cli.models.streaming import (
    Watched,
    causal_depthwise,
    contiguous,
    current_plan,
    derived,
    scratch,
    transposed,
    working,
)


class MambaState(NamedTuple):
    """Streaming state of one causal block: `conv` (batch, d_inner, d_conv - 1), the last inputs of the causal
    convolution (a transposed view of time-major memory); `ssm` (batch, d_inner, d_state), the scan's hidden
    state (float32, or float64 for float64). `step` updates both in place and returns the same state."""

    conv: Tensor
    ssm: Tensor


# ---------------------------------------------------------------- mixer


def _keep_tail(conv_state: Tensor, x: Tensor) -> None:
    """The conv state (batch, d_inner, k - 1) after new inputs x (batch, n, d_inner): the last k - 1 of them."""
    keep, n = conv_state.shape[-1], x.shape[1]
    for i in range(keep - n):  # old inputs that remain move to the front (in order: no overlap, no copy)
        conv_state[..., i].copy_(conv_state[..., i + n])
    conv_state[..., max(0, keep - n) :] = x[:, max(0, n - keep) :].transpose(1, 2)


def _rms_norm(x: Tensor, norm: nn.RMSNorm) -> Tensor:
    """`norm(x)` (x (..., d), eps set) written out, x * rsqrt(|x|^2 / d + eps) * weight: faster than the fused op
    on a streamed chunk, and with scratch `out=` tensors (and eps as a cached tensor) it allocates nothing; one
    pass of `tse_cli.models.kernels` in inference on a CPU."""
    if kernels.usable(x):
        return kernels.norm(x, norm)
    d = norm.normalized_shape[-1]  # a Python int (also when a graph is traced with a dynamic batch)
    eps = derived(norm.weight, "eps", lambda w: torch.tensor(norm.eps, dtype=w.dtype, device=w.device))
    size = torch.linalg.vector_norm(x, dim=-1, keepdim=True, out=scratch(x, (*x.shape[:-1], 1)))
    scale = torch.addcmul(eps, size, size, value=1 / d, out=scratch(size)).rsqrt_()
    return torch.mul(x, scale, out=scratch(x)).mul_(norm.weight)


class _Mixer(nn.Module):
    """The Mamba mixer, with C from the value sequence (self) or from a separate query sequence (cross)."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        *,
        cross: bool,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        scan_backend: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.cross = cross
        self.scan_backend = scan_backend

        # value path: x (-> causal depthwise conv -> SiLU = u) and the gate z
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias, **factory)
        if cross:  # query path: C = q_proj(in_proj_q(query)), no conv, no activation
            self.in_proj_q = nn.Linear(d_model, self.d_inner, bias=bias, **factory)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, bias=conv_bias, **factory)
        # u -> (dt, B) for cross, (dt, B, C) for self
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + d_state * (1 if cross else 2), bias=False, **factory)
        if cross:
            self.q_proj = nn.Linear(self.d_inner, d_state, bias=False, **factory)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **factory)

        # Mamba initialisation: dt_proj keeps the variance; softplus(its bias) is log-uniform in [dt_min, dt_max]
        # (the vectors computed on the CPU: see `budget.placed`)
        nn.init.uniform_(self.dt_proj.weight, -(self.dt_rank**-0.5), self.dt_rank**-0.5)
        cpu = {"device": "cpu", "dtype": dtype}
        dt = torch.exp(torch.rand(self.d_inner, **cpu) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus

        # S4D-real A = -(n + 1) for every channel, and the skip D = 1
        A = torch.arange(1, d_state + 1, **cpu).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(placed(torch.log(A), device))
        self.D = nn.Parameter(torch.ones(self.d_inner, **factory))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)

    def init_state(
        self, batch: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> MambaState:
        """Zero state (the state before the first sample); device and dtype default to the parameters'."""
        device = self.out_proj.weight.device if device is None else device
        dtype = self.out_proj.weight.dtype if dtype is None else dtype
        ssm_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        return MambaState(  # conv: stored time-major (d_inner contiguous), as the conv reads it
            torch.zeros(batch, self.d_conv - 1, self.d_inner, device=device, dtype=dtype).transpose(1, 2),
            torch.zeros(batch, self.d_inner, self.d_state, device=device, dtype=ssm_dtype),
        )

    def _A(self) -> Tensor:
        """A = -exp(A_log) (d_inner, d_state) in at least float32; computed once per weight update when streaming."""
        return derived(self.A_log, "A", lambda a: -torch.exp(a.to(torch.promote_types(a.dtype, torch.float32))))

    def _fused_query(self) -> Tensor:
        """(q_proj.weight @ in_proj_q.weight).T (d_model, d_state), with in_proj_q's bias through q_proj as a last
        row when it has one: C = q_proj(in_proj_q(query)) is one product against it, cached per weight version
        while autograd is off (`_cross_query`)."""

        def fuse(w_q: Tensor, w_in: Tensor, *bias: Tensor) -> Tensor:  # (d_model [+ 1], d_state): weight[, bias]
            # products summed element-wise, not matmuls: a weight transform, which the MAC counter
            # (tse_cli.models.complexity) would otherwise count as work per input
            rows = [(w_in.t()[:, :, None] * w_q.t()[None]).sum(1)] + [(w_q * b).sum(1)[None] for b in bias]
            return torch.cat(rows).contiguous() if bias else rows[0].contiguous()

        in_bias = () if self.in_proj_q.bias is None else (self.in_proj_q.bias,)
        return derived(self.q_proj.weight, "cross-query", fuse, self.in_proj_q.weight, *in_bias)

    def _cross_query(self, query: Tensor) -> Tensor:
        """C = q_proj(in_proj_q(query)) (batch, length, d_state): two products with nothing between them, run as
        one against `_fused_query()` (d_model -> d_state directly: 32x fewer MACs at d_state 16, d_inner 512)."""
        fused = self._fused_query()
        rows = query.reshape(-1, query.shape[-1])
        out = scratch(rows, (rows.shape[0], fused.shape[1]))
        if fused.shape[0] > self.d_model:  # the bias row
            out = torch.addmm(fused[-1], rows, fused[:-1], out=out)
        else:
            out = torch.mm(rows, fused, out=out)
        return out.view(*query.shape[:-1], fused.shape[1])

    def uncounted_macs(self, args: tuple[Tensor, ...], output: Tensor) -> int:
        """MACs of the causal depthwise conv, which runs as element-wise ops (for `tse_cli.models.complexity`)."""
        return output.shape[0] * output.shape[1] * self.d_inner * self.d_conv

    def _mix(self, value: Tensor, query: Tensor | None, state: MambaState | None) -> tuple[Tensor, MambaState | None]:
        """Mixer output (batch, length, d_model) and, when `state` is given, the state after the last step.

        Everything before the scan runs time-major, (batch, length, channels), with the products against cached
        prepared weights (`tse_cli.models.products.linear`); the scan gets transposed views.
        """
        if query is not None and query.shape[:2] != value.shape[:2]:
            raise ValueError(
                f"CrossMamba: query {tuple(query.shape)} and value {tuple(value.shape)} need the same batch and length"
            )
        batch = value.shape[0]
        x, z = linear(value, self.in_proj.weight, self.in_proj.bias).chunk(2, dim=-1)  # (batch, length, d_inner)

        # causal depthwise conv over [previous d_conv - 1 inputs, x]
        history = None if state is None else state.conv.transpose(1, 2).to(x.dtype)
        if kernels.usable(x):  # inference on a CPU: conv and SiLU in one pass
            u = kernels.depthwise(x, history, self.conv1d, 1, "silu")
        else:
            if x.is_cuda and x.shape[1] >= 64:  # long inputs on a GPU: the conv kernel
                past = F.pad(x, (0, 0, self.d_conv - 1, 0)) if history is None else torch.cat([history, x], dim=1)
                u = F.conv1d(past.transpose(1, 2), self.conv1d.weight, self.conv1d.bias, groups=self.d_inner)
                u = u.transpose(1, 2)
            else:  # shifted multiply-adds: far less overhead per streamed chunk, 25x faster on a CPU block
                out = scratch(x, (batch, x.shape[1], self.d_inner))
                u = causal_depthwise(x, history, self.conv1d.weight, self.conv1d.bias, out=out)
            u = F.silu(u, inplace=not torch.is_grad_enabled())

        # x_proj(u) -> dt, B (cross) or dt, B, C (self); cross takes C from the query instead
        dt, B, *C = linear(u, self.x_proj.weight).split([self.dt_rank] + [self.d_state] * (1 + (not self.cross)), -1)
        C = self._cross_query(query) if self.cross else C[0]
        delta = linear(dt, self.dt_proj.weight)  # its bias goes in as the scan's delta_bias
        # the scan in mamba_ssm's layout (transposed views); dt_proj's bias goes in as its delta_bias
        scan_in = (u, delta, self._A(), B, C, self.D, z)
        scan_in = tuple(t.transpose(1, 2) if t.dim() == 3 else t for t in scan_in)
        if state is None:
            y = selective_scan(*scan_in, self.dt_proj.bias, delta_softplus=True, backend=self.scan_backend)
        else:  # the state is updated in place
            y, _ = selective_scan_step(
                state.ssm, *scan_in, self.dt_proj.bias, delta_softplus=True, backend=self.scan_backend, in_place=True
            )
            _keep_tail(state.conv, x)
        return linear(y.transpose(1, 2), self.out_proj.weight, self.out_proj.bias), state


class MambaMixer(_Mixer):
    """Plain (self) Mamba mixer: B, C, delta and u all from `x`."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, **kwargs) -> None:
        super().__init__(d_model, d_state, d_conv, expand, cross=False, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        """x (batch, length, d_model) -> (batch, length, d_model), causal."""
        return self._mix(x, None, None)[0]

    def step(self, x: Tensor, state: MambaState) -> tuple[Tensor, MambaState]:
        """Streaming: a chunk (batch, length >= 1, d_model) after `state` -> (output chunk, new state)."""
        return self._mix(x, None, state)


class CrossMambaMixer(_Mixer):
    """CrossMamba mixer: C from `query`; B, delta and u from `value` (published argument order: query, value)."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, **kwargs) -> None:
        super().__init__(d_model, d_state, d_conv, expand, cross=True, **kwargs)

    def forward(self, query: Tensor, value: Tensor) -> Tensor:
        """query, value (batch, length, d_model) -> (batch, length, d_model), causal."""
        return self._mix(value, query, None)[0]

    def step(self, query: Tensor, value: Tensor, state: MambaState) -> tuple[Tensor, MambaState]:
        """Streaming: chunks (batch, length >= 1, d_model) after `state` -> (output chunk, new state)."""
        return self._mix(value, query, state)


# ---------------------------------------------------------------- causal blocks


class MambaBlock(nn.Module):
    """Causal pre-norm residual block: mixer(RMSNorm(x)) + x. Constructor arguments as `MambaMixer`'s, plus
    `norm_eps` (RMSNorm epsilon, 1e-5) and `scan_backend`."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, **kwargs) -> None:
        super().__init__()
        eps = kwargs.pop("norm_eps", 1e-5)
        factory = {k: kwargs[k] for k in ("device", "dtype") if k in kwargs}
        self.mixer = MambaMixer(d_model, d_state, d_conv, expand, **kwargs)
        self.norm = nn.RMSNorm(d_model, eps=eps, **factory)

    def forward(self, x: Tensor) -> Tensor:
        """x (batch, length, d_model) -> (batch, length, d_model)."""
        return self.mixer(_rms_norm(x, self.norm)) + x

    def init_state(
        self, batch: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> MambaState:
        """Zero streaming state for `batch` sequences."""
        return self.mixer.init_state(batch, device, dtype)

    def step(self, x: Tensor, state: MambaState) -> tuple[Tensor, MambaState]:
        """Streaming: a chunk (batch, length >= 1, d_model) after `state` -> (output chunk, new state)."""
        out, state = self.mixer.step(_rms_norm(x, self.norm), state)
        return out.add_(x), state


class CrossMambaBlock(nn.Module):
    """Causal CrossMamba block: mixer(RMSNorm_q(query), RMSNorm(value)) + value. Constructor arguments as
    `CrossMambaMixer`'s (d_state=16, d_conv=4, expand=2, dt_rank="auto", ...), plus `norm_eps` and `scan_backend`."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, **kwargs) -> None:
        super().__init__()
        eps = kwargs.pop("norm_eps", 1e-5)
        factory = {k: kwargs[k] for k in ("device", "dtype") if k in kwargs}
        self.mixer = CrossMambaMixer(d_model, d_state, d_conv, expand, **kwargs)
        self.norm = nn.RMSNorm(d_model, eps=eps, **factory)
        self.norm_query = nn.RMSNorm(d_model, eps=eps, **factory)

    def forward(self, query: Tensor, value: Tensor) -> Tensor:
        """query (the clue), value (the mixture), both (batch, length, d_model) -> (batch, length, d_model)."""
        return self.mixer(_rms_norm(query, self.norm_query), _rms_norm(value, self.norm)) + value

    def init_state(
        self, batch: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> MambaState:
        """Zero streaming state for `batch` sequences."""
        return self.mixer.init_state(batch, device, dtype)

    def step(self, query: Tensor, value: Tensor, state: MambaState) -> tuple[Tensor, MambaState]:
        """Streaming: chunks (batch, length >= 1, d_model) after `state` -> (output chunk, new state).

        Inference on a CPU, chunks of up to `kernels.LINEAR_ROWS` frames with the `cpu` scan: the whole block as
        one call of `kernels.cross_mamba_step` (see `_StepPlan`)."""
        plan = self._step_plan(query, value, state)
        if plan is not None:
            q, v = contiguous(query), contiguous(value)
            out, work = working(v, v.shape), working(v, (kernels.mamba_work(plan, v.shape[0] * v.shape[1]),))
            kernels.cross_mamba_step(plan, q, v, out, state.conv.transpose(1, 2), state.ssm, work)
            return out, state
        out, state = self.mixer.step(_rms_norm(query, self.norm_query), _rms_norm(value, self.norm), state)
        return out.add_(value), state

    def _step_plan(self, query: Tensor, value: Tensor, state: MambaState) -> kernels.MambaBlock | None:
        """The fused step's block (`_StepPlan`), or None where the step runs operation by operation."""
        if value.shape[0] * value.shape[1] > kernels.LINEAR_ROWS or not kernels.usable(value, query):
            return None
        plan = self.fused_plan(state)
        return None if plan is None else plan.block

    def fused_plan(self, state: MambaState) -> _StepPlan | None:
        """The `_StepPlan` (made, or remade after a parameter changed) of the fused step over `state`, for chunks of
        its device and dtype and up to `kernels.LINEAR_ROWS` rows, or None where the kernels cannot run it (not a
        CPU float32 state, autograd on, a scan backend other than `cpu`). Its `block` may still be None."""
        if not kernels.usable(state.ssm) or resolve_backend(self.mixer.scan_backend, state.ssm) != "cpu":
            return None
        if not state.conv.transpose(1, 2).is_contiguous():
            return None
        return current_plan(_STEP_PLANS, self, _StepPlan)


class _StepPlan:
    """The `kernels.MambaBlock` of a CrossMambaBlock, valid while `watched.fresh()` (no parameter replaced or
    changed in place); keeps the derived weights it points to. `block` is None for inference-tensor parameters
    (made under `torch.inference_mode`) and norms without weights: the step then runs operation by operation."""

    def __init__(self, owner: CrossMambaBlock):
        self.watched = Watched(owner)
        self.block: kernels.MambaBlock | None = None
        if not self.watched.trackable or owner.norm.weight is None or owner.norm_query.weight is None:
            return
        mixer = owner.mixer
        fused = mixer._fused_query()
        query_weight, query_bias = fused[: mixer.d_model].t(), fused[mixer.d_model :].reshape(-1)  # bias: 0 or d_state
        self.kept = [
            owner.norm_query.weight, owner.norm.weight,
            kernels.panels(mixer.in_proj.weight), mixer.in_proj.bias,
            kernels.pack_panels(query_weight), query_bias.contiguous() if query_bias.numel() else None,
            transposed(mixer.conv1d.weight), mixer.conv1d.bias,
            kernels.panels(mixer.x_proj.weight), kernels.panels(mixer.dt_proj.weight), mixer.dt_proj.bias,
            transposed(mixer._A()), mixer.D,
            kernels.panels(mixer.out_proj.weight), mixer.out_proj.bias,
        ]  # fmt: skip
        eps = [kernels.norm_eps(n) for n in (owner.norm_query, owner.norm)]
        sizes = (mixer.d_model, mixer.d_inner, mixer.d_state, mixer.dt_rank, mixer.d_conv)
        self.block = kernels.MambaBlock(*map(kernels.address, self.kept), *sizes, *eps)


_STEP_PLANS: weakref.WeakKeyDictionary[CrossMambaBlock, _StepPlan] = weakref.WeakKeyDictionary()


# ---------------------------------------------------------------- bidirectional wrappers (eq. 22 as published)


class _Bidirectional(nn.Module):
    """mamba(*seqs) + flip(mamba_bw(*flipped seqs)): two causal residual blocks, one running backwards in time."""

    mamba: nn.Module
    mamba_bw: nn.Module

    def _both(self, *seqs: Tensor) -> Tensor:
        return self.mamba(*seqs) + self.mamba_bw(*(s.flip(1) for s in seqs)).flip(1)


class BiMamba(_Bidirectional):
    """Bidirectional plain Mamba: two `MambaBlock`s (same arguments), `mamba` and `mamba_bw`."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, **kwargs) -> None:
        super().__init__()
        self.mamba = MambaBlock(d_model, d_state, d_conv, expand, **kwargs)
        self.mamba_bw = MambaBlock(d_model, d_state, d_conv, expand, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        """x (batch, length, d_model) -> (batch, length, d_model), non-causal."""
        return self._both(x)


class BiCrossMamba(_Bidirectional):
    """Bidirectional CrossMamba: two `CrossMambaBlock`s (same arguments), `mamba` and `mamba_bw`."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, **kwargs) -> None:
        super().__init__()
        self.mamba = CrossMambaBlock(d_model, d_state, d_conv, expand, **kwargs)
        self.mamba_bw = CrossMambaBlock(d_model, d_state, d_conv, expand, **kwargs)

    def forward(self, query: Tensor, value: Tensor) -> Tensor:
        """query, value (batch, length, d_model) -> (batch, length, d_model), non-causal."""
        return self._both(query, value)


def set_scan_backend(module: nn.Module, backend: str) -> None:
    """Use scan backend `backend` (one of `tse_cli.models.ssm.BACKENDS`) in every Mamba mixer inside `module`."""
    for m in module.modules():
        if isinstance(m, _Mixer):
            m.scan_backend = backend
