"""Selective-scan backends: the explicit attention form of eq. (20), backend/chunking agreement (outputs and
gradients), state round trips, streaming, backend selection, and the CUDA kernel when one is available."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tse_cli.models import ssm
from tse_cli.models.ssm import mamba_adapter, reference, resolve_backend, selective_scan, selective_scan_step


def _inputs(batch=2, d_inner=5, d_state=4, length=37, dtype=torch.float64, seed=0, device="cpu"):
    """Random scan inputs (delta before softplus, so any sign) and an initial state."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(device, dtype)

    return {
        "u": rand(batch, d_inner, length),
        "delta": rand(batch, d_inner, length),
        "A": -torch.rand(d_inner, d_state, generator=g, dtype=torch.float64).mul(4).add(0.1).to(device, dtype),
        "B": rand(batch, d_state, length),
        "C": rand(batch, d_state, length),
        "D": rand(d_inner),
        "z": rand(batch, d_inner, length),
        "delta_bias": rand(d_inner, scale=0.5),
        "initial_state": rand(batch, d_inner, d_state),
    }


def _attention_form(u, delta, A, B, C, D, z, delta_bias, initial_state):
    """Eq. (20) written out: y_i = sum_{j<=i} C_i . (exp(A (c_i - c_j)) * delta_j B_j u_j) with c = cumsum(delta),
    plus the decayed initial state C_i . exp(A c_i) h0, then + D u and times silu(z). O(L^2), no recurrence."""
    delta = F.softplus(delta + delta_bias[:, None])
    c = delta.cumsum(-1)  # (b, d, L)
    gap = c[..., :, None] - c[..., None, :]  # (b, d, i, j) = c_i - c_j
    causal = torch.ones(u.shape[-1], u.shape[-1], dtype=torch.bool).tril()
    decay = torch.exp(gap[..., None] * A[None, :, None, None, :]).masked_fill(~causal[..., None], 0)  # (b,d,i,j,n)
    attention = torch.einsum("bni,bdijn,bnj->bdij", C, decay, B)  # query C_i, key B_j, per-channel decay
    y = torch.einsum("bdij,bdj->bdi", attention, delta * u)
    y = y + torch.einsum("bni,bdin,bdn->bdi", C, torch.exp(c[..., None] * A[None, :, None, :]), initial_state)
    return (y + D[:, None] * u) * F.silu(z)


@pytest.mark.parametrize("length", [1, 2, 17, 300])
@pytest.mark.parametrize("backend", ["naive", "reference"])
def test_scan_equals_attention_form(length, backend):
    x = _inputs(length=length, seed=length)
    expected = _attention_form(**x)
    got = selective_scan(**x, delta_softplus=True, backend=backend)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("length", [1, 3, 13, 64])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_streamed_chunk_path_equals_naive(length, dtype):
    """Short chunks without autograd take the in-place streaming path; same outputs and last state."""
    x = _inputs(length=length, seed=10 + length, dtype=dtype)
    with torch.no_grad():
        got = selective_scan(**x, delta_softplus=True, return_last_state=True, backend="reference")
        expected = selective_scan(**x, delta_softplus=True, return_last_state=True, backend="naive")
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=tolerance)


def _outputs_and_grads(x, **kwargs):
    """Output, last state, and the gradients of a loss on both with respect to every input."""
    leaves = {k: v.detach().clone().requires_grad_() for k, v in x.items()}
    y, last = selective_scan(**leaves, delta_softplus=True, return_last_state=True, **kwargs)
    g = torch.Generator().manual_seed(1)
    loss = (y * torch.randn(y.shape, generator=g, dtype=y.dtype)).sum() + (last * last.detach().cos()).sum()
    loss.backward()
    return y.detach(), last.detach(), {k: v.grad for k, v in leaves.items()}


@torch.no_grad()
@pytest.mark.parametrize("length", [0, 1, 150])
def test_wide_layer_inference_in_pieces_equals_naive(length, monkeypatch):
    """Without autograd a wide layer (batch * d_inner * d_state >= LOOP_ELEMENTS) with time-major inputs runs the
    short-chunk loop piece by piece (150 steps: pieces of 64, 64 and 22), the state carried across pieces; an empty
    sequence returns h0. (batch, d_inner, length)-contiguous inputs keep the chunked path."""
    x = _inputs(batch=2, d_inner=256, d_state=16, length=length, dtype=torch.float32, seed=3)
    assert reference.LOOP_ELEMENTS <= 2 * 256 * 16
    expected = selective_scan(**x, delta_softplus=True, return_last_state=True, backend="naive")
    calls = []
    monkeypatch.setattr(reference, "pieces_core", lambda *a, run=reference.pieces_core: calls.append(1) or run(*a))
    for time_major in (True, False):
        fed = {
            k: v.transpose(1, 2).contiguous().transpose(1, 2) if time_major and v.dim() == 3 else v
            for k, v in x.items()
        }
        calls.clear()
        got = selective_scan(**fed, delta_softplus=True, return_last_state=True, backend="reference")
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
        assert len(calls) == (time_major and length > 1 or length == 1), (time_major, length)


@pytest.mark.parametrize("chunk_size", [None, 1, 3, 16, 64])
def test_chunkings_match_naive_outputs_and_gradients(chunk_size):
    x = _inputs(length=37)  # 37 is not a multiple of any chunk above
    y0, last0, grads0 = _outputs_and_grads(x, backend="naive")
    y, last, grads = _outputs_and_grads(x, backend="reference", chunk_size=chunk_size)
    torch.testing.assert_close(y, y0, rtol=0, atol=1e-12)
    torch.testing.assert_close(last, last0, rtol=0, atol=1e-12)
    for name, g in grads0.items():
        torch.testing.assert_close(grads[name], g, rtol=0, atol=1e-10, msg=f"gradient of {name}")


def test_segmented_reference_matches_naive(monkeypatch):
    """Inputs longer than one segment: the state is carried across segments, each recomputed in backward."""
    x = _inputs(length=53)
    y0, last0, grads0 = _outputs_and_grads(x, backend="naive")
    monkeypatch.setattr(reference, "SEGMENT_ELEMENTS", 2 * 5 * 4 * 12)  # 12-step segments, 5 segments
    y, last, grads = _outputs_and_grads(x, backend="reference", chunk_size=5)
    torch.testing.assert_close(y, y0, rtol=0, atol=1e-12)
    torch.testing.assert_close(last, last0, rtol=0, atol=1e-12)
    for name, g in grads0.items():
        torch.testing.assert_close(grads[name], g, rtol=0, atol=1e-10, msg=f"gradient of {name}")
    with torch.no_grad():
        torch.testing.assert_close(
            selective_scan(**x, delta_softplus=True, backend="reference"), y0, rtol=0, atol=1e-12
        )


def test_no_state_options_match_naive():
    """Without D, z, bias, softplus or initial state: y and the last state from zero."""
    x = {k: v for k, v in _inputs(length=29).items() if k in ("u", "delta", "A", "B", "C")}
    x["delta"] = x["delta"].abs()
    y0, last0 = selective_scan(**x, return_last_state=True, backend="naive")
    y, last = selective_scan(**x, return_last_state=True, backend="reference", chunk_size=8)
    torch.testing.assert_close(y, y0, rtol=0, atol=1e-12)
    torch.testing.assert_close(last, last0, rtol=0, atol=1e-12)


def test_state_round_trip_and_streaming():
    """Scanning in pieces with the state carried across equals one scan, for any piece sizes including 1."""
    x = _inputs(length=120)
    whole, last = selective_scan(**x, delta_softplus=True, return_last_state=True)
    state, ys, start = x["initial_state"], [], 0
    for size in [1, 1, 7, 30, 1, 64, 16]:
        piece = {k: v[..., start : start + size] if k in ("u", "delta", "B", "C", "z") else v for k, v in x.items()}
        del piece["initial_state"]
        y, state = selective_scan_step(state, **piece, delta_softplus=True)
        ys.append(y)
        start += size
    assert start == 120
    torch.testing.assert_close(torch.cat(ys, -1), whole, rtol=0, atol=1e-12)
    torch.testing.assert_close(state, last, rtol=0, atol=1e-12)


def test_float32_long_sequence_is_stable():
    """Large decays over long inputs (sums of delta*A far beyond float32's exp range) stay finite and exact."""
    x = _inputs(batch=1, d_inner=4, d_state=16, length=3000, seed=3)
    x["A"] = -torch.arange(1, 17, dtype=torch.float64).repeat(4, 1) * 4  # up to -64 per unit delta
    x["delta_bias"] = x["delta_bias"] + 2.0
    expected = selective_scan(**x, delta_softplus=True, backend="naive")
    got = selective_scan(**{k: v.float() for k, v in x.items()}, delta_softplus=True, backend="reference")
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-4)


def test_half_precision_inputs_compute_in_float32():
    x = _inputs(length=40)
    expected = selective_scan(**x, delta_softplus=True)
    y, last = selective_scan(**{k: v.bfloat16() for k, v in x.items()}, delta_softplus=True, return_last_state=True)
    assert y.dtype == torch.bfloat16 and last.dtype == torch.float32
    torch.testing.assert_close(y.double(), expected, rtol=0.05, atol=0.1)


def test_resolve_backend(monkeypatch):
    cpu = torch.zeros(1)
    monkeypatch.delenv(ssm.ENV_VAR, raising=False)
    assert resolve_backend("auto", cpu, grad=True) == "reference"
    assert resolve_backend("auto", cpu.double()) == "reference"
    assert resolve_backend("naive", cpu) == "naive"
    monkeypatch.setenv(ssm.ENV_VAR, "naive")
    assert resolve_backend("auto", cpu) == "naive"
    assert resolve_backend("reference", cpu) == "reference"  # an explicit choice beats the environment
    monkeypatch.setenv(ssm.ENV_VAR, "fast")
    with pytest.raises(ValueError, match=ssm.ENV_VAR):
        resolve_backend("auto", cpu)
    with pytest.raises(ValueError, match="unknown scan backend 'quick'"):
        resolve_backend("quick", cpu)
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        resolve_backend("cuda", cpu)


def test_cpu_path_never_imports_mamba_ssm(monkeypatch):
    def forbidden():
        raise AssertionError("mamba_ssm looked up for CPU tensors")

    monkeypatch.delenv(ssm.ENV_VAR, raising=False)
    monkeypatch.setattr(mamba_adapter, "mamba_kernel", forbidden)
    selective_scan(**_inputs(length=5), delta_softplus=True)


@pytest.mark.parametrize(
    ("name", "cut", "message"),
    [
        ("B", lambda t: t[..., :9], r"B \(2, 4, 9\) \(expected \(2, 4, 10\)\)"),
        ("C", lambda t: t[..., :9], r"C \(2, 4, 9\) \(expected \(2, 4, 10\)\)"),
        ("delta", lambda t: t[:1], r"delta \(1, 5, 10\) \(expected \(2, 5, 10\)\)"),
        ("D", lambda t: t[:3], r"D \(3,\) \(expected \(5,\)\)"),
        ("initial_state", lambda t: t[..., :2], r"state \(2, 5, 2\) \(expected \(2, 5, 4\)\)"),
        ("u", lambda t: t[0], r"u \(5, 10\) \(expected \(batch, d_inner, length\)\)"),
    ],
)
def test_bad_shapes_are_one_value_error_naming_them(name, cut, message):
    """A B/C (or any input) that does not fit u and A is a ValueError naming the tensor, its shape and the
    expected one, for the whole-sequence scan and the streaming step alike."""
    x = _inputs(length=10)
    x[name] = cut(x[name])
    with pytest.raises(ValueError, match="selective_scan: shapes do not fit u .*" + message):
        selective_scan(**x)
    state = x.pop("initial_state")
    with pytest.raises(ValueError, match=r"selective_scan(_step)?: shapes do not fit u .*" + message):
        selective_scan_step(state, **x, in_place=True)


@pytest.mark.parametrize("name", ["A", "u", "B"])
def test_complex_inputs_are_refused(name):
    """The scan is real: a complex A (or input) is refused instead of losing its imaginary part."""
    x = _inputs(length=6)
    x[name] = torch.complex(x[name], torch.ones_like(x[name]))
    with pytest.raises(ValueError, match=f"selective_scan: the scan takes real floating-point tensors, got {name} "):
        selective_scan(**x)
    state = x.pop("initial_state")
    with pytest.raises(ValueError, match="real floating-point"):
        selective_scan_step(state, **x, in_place=True)


needs_kernel = pytest.mark.skipif(
    not torch.cuda.is_available() or not ssm.mamba_ssm_available(), reason="needs a CUDA GPU and mamba_ssm"
)


@pytest.mark.cuda
@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_state", [False, True])
def test_cuda_kernel_matches_reference(dtype, with_state):
    x = _inputs(batch=2, d_inner=64, d_state=16, length=500, dtype=torch.float32, device="cuda")
    x["A"] = x["A"].float()
    if not with_state:
        x["initial_state"] = None
    for k in ("u", "delta", "B", "C", "z"):
        x[k] = x[k].to(dtype)
    results = {}
    for backend in ("reference", "cuda"):
        leaves = {k: None if v is None else v.detach().clone().requires_grad_() for k, v in x.items()}
        y, last = selective_scan(**leaves, delta_softplus=True, return_last_state=True, backend=backend)
        y.float().square().sum().backward()
        results[backend] = (y.float(), last, {k: v.grad.float() for k, v in leaves.items() if v is not None})
    tol = {"rtol": 1e-3, "atol": 1e-3} if dtype == torch.float32 else {"rtol": 5e-2, "atol": 5e-2}
    (y0, last0, g0), (y1, last1, g1) = results["reference"], results["cuda"]
    torch.testing.assert_close(y1, y0, **tol)
    torch.testing.assert_close(last1, last0, **tol)
    for name in g0:
        scale = g0[name].abs().max().clamp(min=1)
        torch.testing.assert_close(g1[name] / scale, g0[name] / scale, **tol, msg=f"gradient of {name}")
