"""The Triton selective-scan backend against the naive recurrence: outputs, last state and every gradient, in
float32 and bfloat16, with any strides, and its place in backend selection.

On CUDA machines the kernels compile for the GPU; elsewhere conftest.py sets TRITON_INTERPRET=1 and they run in
Triton's CPU interpreter (slow, so the shapes are small; they still cover partial channel blocks, a padded
state size and a partial last chunk: d_inner 18 = 16 + 2, d_state 3 -> 4, length 21 = 16 + 5)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
import warnings

import pytest
import torch

from tse_cli.models.crossmamba import CrossMambaBlock, set_scan_backend
from tse_cli.models.ssm import dispatch, resolve_backend, selective_scan

pytest.importorskip("triton", reason="Triton is not installed (torch's CPU-only wheels)")
from tse_cli.models.ssm import triton_kernels  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and not triton_kernels.interpreting():
    pytest.skip("no CUDA and Triton's interpreter is off (TRITON_INTERPRET=1 was not set)", allow_module_level=True)


def _inputs(batch=2, d_inner=18, d_state=3, length=21, *, time_major=False, seed=0):
    """Random float32 scan inputs; `time_major`: u, delta, z, B, C as transposed views of (batch, length, c)
    tensors, the layout CrossMamba passes in."""
    g = torch.Generator().manual_seed(seed)

    def seq(channels):
        shape = (batch, length, channels) if time_major else (batch, channels, length)
        t = torch.randn(*shape, generator=g).to(DEVICE)
        return t.transpose(1, 2) if time_major else t

    return {
        "u": seq(d_inner),
        "delta": seq(d_inner),
        "A": -torch.rand(d_inner, d_state, generator=g).mul(4).add(0.1).to(DEVICE),
        "B": seq(d_state),
        "C": seq(d_state),
        "D": torch.randn(d_inner, generator=g).to(DEVICE),
        "z": seq(d_inner),
        "delta_bias": (torch.randn(d_inner, generator=g) * 0.5).to(DEVICE),
        "initial_state": torch.randn(batch, d_inner, d_state, generator=g).to(DEVICE),
    }


def _run(backend, inputs, softplus, cast=None):
    """y, last state and the gradients of a loss that reads both (so dL/d last state is non-zero)."""
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    fed = {k: (v.to(cast) if cast and k in ("u", "delta", "B", "C", "z") else v) for k, v in leaves.items()}
    y, last = selective_scan(**fed, delta_softplus=softplus, return_last_state=True, backend=backend)
    (
        y.float().square().sum() + (last * torch.linspace(-1, 1, last.numel(), device=DEVICE).view_as(last)).sum()
    ).backward()
    return y.float(), last, {k: v.grad for k, v in leaves.items()}


def _assert_relative(got, expected, tol, what):
    scale = expected.abs().max().clamp(min=1e-6)
    err = ((got - expected).abs().max() / scale).item()
    assert err <= tol, f"{what}: max |triton - naive| / max |naive| = {err:.2e} > {tol:.0e}"


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"softplus": True, "time_major": True}, id="all-inputs-time-major"),
        pytest.param({"softplus": False, "drop": ("D", "z", "delta_bias", "initial_state")}, id="bare"),
    ],
)
def test_matches_naive_outputs_and_gradients(options):
    x = _inputs(time_major=options.get("time_major", False))
    for name in options.get("drop", ()):
        del x[name]
    y0, last0, g0 = _run("naive", x, options["softplus"])
    y1, last1, g1 = _run("triton", x, options["softplus"])
    _assert_relative(y1, y0, 1e-5, "y")
    _assert_relative(last1, last0, 1e-5, "last state")
    assert g1.keys() == g0.keys()
    for name in g0:
        _assert_relative(g1[name], g0[name], 1e-5, f"gradient of {name}")


def test_bfloat16_inputs_compute_in_float32():
    """bfloat16 u, delta, B, C, z: the same function as the float32 naive scan of the rounded values."""
    x = _inputs(seed=1)
    rounded = {k: (v.bfloat16().float() if k in ("u", "delta", "B", "C", "z") else v) for k, v in x.items()}
    y0, last0, g0 = _run("naive", rounded, True)
    y1, last1, g1 = _run("triton", x, True, cast=torch.bfloat16)
    _assert_relative(y1, y0, 1e-2, "y (bfloat16 output)")
    _assert_relative(last1, last0, 1e-5, "last state (float32)")
    for name in g0:  # gradients of bfloat16 inputs come back rounded to bfloat16
        _assert_relative(g1[name], g0[name], 1e-2, f"gradient of {name}")


@torch.no_grad()
def test_streamed_chunks_equal_one_scan():
    x = _inputs(batch=1, length=20, seed=2)
    del x["initial_state"]
    whole, last = selective_scan(**x, delta_softplus=True, return_last_state=True, backend="triton")
    state, parts = None, []
    for piece in torch.arange(20).split([7, 13]):
        part = {k: (v[..., piece] if v.dim() == 3 else v) for k, v in x.items()}
        y, state = selective_scan(
            **part, delta_softplus=True, initial_state=state, return_last_state=True, backend="triton"
        )
        parts.append(y)
    torch.testing.assert_close(torch.cat(parts, -1), whole, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state, last, rtol=1e-5, atol=1e-5)


def test_crossmamba_block_on_triton_equals_reference():
    """A CrossMamba block (query from the clue, key/value from the mixture) through both backends."""
    torch.manual_seed(0)
    block = CrossMambaBlock(d_model=8, d_state=4).to(DEVICE)
    query, value = torch.randn(2, 2, 16, 8, device=DEVICE).unbind(0)
    outputs = {}
    for backend in ("reference", "triton"):
        set_scan_backend(block, backend)
        block.zero_grad()
        out = block(query, value)
        out.square().sum().backward()
        outputs[backend] = (out.detach(), {n: p.grad.clone() for n, p in block.named_parameters()})
    (out0, g0), (out1, g1) = outputs["reference"], outputs["triton"]
    _assert_relative(out1, out0, 1e-5, "block output")
    for name in g0:
        _assert_relative(g1[name], g0[name], 1e-4, f"gradient of {name}")


@torch.no_grad()
def test_crossmamba_block_streams_on_triton():
    """`step` on chunks (the state carried by the kernel's initial state, updated in place) equals the forward."""
    torch.manual_seed(1)
    block = CrossMambaBlock(d_model=8, d_state=4).to(DEVICE).eval()
    set_scan_backend(block, "triton")
    query, value = torch.randn(2, 1, 20, 8, device=DEVICE).unbind(0)
    whole = block(query, value)
    state, parts = block.init_state(1), []
    for piece in torch.arange(20, device=DEVICE).split([3, 16, 1]):
        out, state = block.step(query[:, piece], value[:, piece], state)
        parts.append(out.clone())
    torch.testing.assert_close(torch.cat(parts, 1), whole, rtol=1e-5, atol=1e-5)


def test_backend_selection(monkeypatch):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    cuda32 = types.SimpleNamespace(is_cuda=True, dtype=torch.float32)  # resolve_backend reads only these two
    monkeypatch.setattr(dispatch, "mamba_ssm_available", lambda: True)
    assert resolve_backend("auto", cuda32) == "cuda"  # mamba_ssm stays the preferred kernel
    monkeypatch.setattr(dispatch, "mamba_ssm_available", lambda: False)
    assert resolve_backend("auto", cuda32) == "triton"
    assert resolve_backend("auto", types.SimpleNamespace(is_cuda=True, dtype=torch.float64)) == "reference"
    assert resolve_backend("auto", torch.zeros(1)) in ("reference", "cpu")  # never the interpreter by itself
    with pytest.raises(ValueError, match="computes in float32"):
        resolve_backend("triton", torch.zeros(1, dtype=torch.float64, device=DEVICE))

    compiled = types.SimpleNamespace(interpreting=lambda: False)
    monkeypatch.setattr(dispatch, "_triton_module", lambda: compiled)
    with pytest.raises(ValueError, match="'triton' .* needs CUDA tensors"):
        resolve_backend("triton", torch.zeros(1))

    monkeypatch.setattr(dispatch, "_triton_module", lambda: None)
    with pytest.raises(RuntimeError, match="needs Triton"):
        resolve_backend("triton", cuda32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dispatch._notice_no_fused_scan.cache_clear()
        assert resolve_backend("auto", cuda32) == "reference"
    assert any("neither mamba_ssm" in str(w.message) for w in caught)


def test_kernels_compile_for_h100_without_spills():
    """The real (not interpreted) compile for sm_90, on any machine: Triton lowers both kernels, ptxas accepts them
    and keeps every value in registers, for float32 and bfloat16 inputs."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = "import json; from tse_cli.models.ssm.triton_kernels import compile_report as r; print(json.dumps(r(90)))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(done.stdout.splitlines()[-1])
    assert {(r["kernel"], r["dtype"]) for r in rows} == {
        (k, d) for k in ("_forward_kernel", "_backward_kernel") for d in ("fp32", "bf16")
    }
    for row in rows:
        assert row["spill_bytes"] == 0, row
        assert 0 < row["registers"] <= 255, row


def test_auto_falls_back_once_when_the_kernels_fail_here(monkeypatch):
    """`auto` picked Triton (as on a CUDA machine without mamba_ssm) and its kernels fail to build: one warning, the
    reference result, and `auto` stays on the reference; an explicit 'triton' still raises the error."""
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    monkeypatch.setattr(dispatch, "_TRITON_FAILURE", [])
    monkeypatch.setattr(dispatch, "mamba_ssm_available", lambda: False)
    cuda32 = types.SimpleNamespace(is_cuda=True, dtype=torch.float32)

    def broken(*args):
        raise RuntimeError("PTX .version 9.9 does not support .target sm_90")

    monkeypatch.setattr(dispatch, "_triton_module", lambda: types.SimpleNamespace(triton_scan=broken))
    real_resolve = dispatch.resolve_backend
    monkeypatch.setattr(dispatch, "resolve_backend", lambda backend, tensor, grad=False: real_resolve(backend, cuda32))
    x = {k: v.cpu() for k, v in _inputs(batch=1, length=5).items()}
    expected = selective_scan(**x, delta_softplus=True, backend="naive")
    with pytest.warns(RuntimeWarning, match="Triton scan kernels failed on this machine.*PTX"):
        got = selective_scan(**x, delta_softplus=True)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert real_resolve("auto", cuda32) == "reference"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once
        selective_scan(**x, delta_softplus=True)
    with pytest.raises(RuntimeError, match="PTX"):
        selective_scan(**x, delta_softplus=True, backend="triton")
