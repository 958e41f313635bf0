"""The `cpu` scan backend (tse_cli/models/ssm/cpu_kernel.c, built on first use): equal to the naive recurrence
in float64 for every option, layout, block remainder and thread split; the in-place streaming step; what `auto`
picks; and a whole WaveMamba against the reference backend."""

from __future__ import annotations

import pytest
import torch
from test_scan import _inputs

from tse_cli.models import create, kernels
from tse_cli.models.crossmamba import set_scan_backend
from tse_cli.models.ssm import cpu_kernel, dispatch, resolve_backend, selective_scan, selective_scan_step

if not cpu_kernel.cpu_kernel_available():
    pytest.skip(f"the cpu scan kernel does not build here: {cpu_kernel.build_error()}", allow_module_level=True)


def _naive(x: dict, **options) -> tuple[torch.Tensor, torch.Tensor]:
    """The float64 naive recurrence on the same inputs."""
    x64 = {k: None if v is None else v.double() for k, v in x.items()}
    return selective_scan(**x64, return_last_state=True, backend="naive", **options)


def _float32(x: dict) -> dict:
    return {k: None if v is None else v.float() for k, v in x.items()}


def _time_major(t: torch.Tensor) -> torch.Tensor:
    """The same values as a transposed view of (batch, length, channels) memory (the mixer's layout)."""
    return t.transpose(1, 2).contiguous().transpose(1, 2)


def _close(got, expected, atol: float = 2e-5) -> None:
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape
        scale = e.abs().amax().clamp(min=1) if e.numel() else 1
        torch.testing.assert_close(g.double() / scale, e / scale, rtol=0, atol=atol)


@pytest.mark.parametrize(
    ("batch", "d_inner", "d_state", "length"),
    [(2, 5, 4, 37), (1, 16, 16, 1), (3, 40, 16, 100), (1, 512, 16, 13), (2, 33, 1, 9), (1, 17, 64, 20), (2, 8, 3, 0)],
)
@pytest.mark.parametrize("layout", ["contiguous", "time-major"])
@torch.no_grad()
def test_cpu_kernel_equals_naive(batch, d_inner, d_state, length, layout):
    """Full and partial channel blocks, d_state 1-64, empty and one-step sequences, both memory layouts."""
    x = _float32(_inputs(batch=batch, d_inner=d_inner, d_state=d_state, length=length, seed=d_inner + length))
    if layout == "time-major":
        x = {k: _time_major(v) if k in ("u", "delta", "z", "B", "C") else v for k, v in x.items()}
    got = selective_scan(**x, delta_softplus=True, return_last_state=True, backend="cpu")
    _close(got, _naive(x, delta_softplus=True))


@pytest.mark.parametrize("drop", [(), ("D",), ("z",), ("delta_bias",), ("initial_state",), ("D", "z", "delta_bias")])
@pytest.mark.parametrize("softplus", [True, False])
@torch.no_grad()
def test_cpu_kernel_options_equal_naive(drop, softplus):
    x = _float32(_inputs(batch=2, d_inner=24, d_state=5, length=30, seed=3))
    if not softplus:  # delta is the step itself then: positive, as softplus would make it
        x["delta"] = x["delta"].abs() * 0.3
    x.update(dict.fromkeys(drop))
    got = selective_scan(**x, delta_softplus=softplus, return_last_state=True, backend="cpu")
    _close(got, _naive(x, delta_softplus=softplus))


@torch.no_grad()
def test_softplus_covers_its_range():
    """delta + bias from -30 to 30 (both sides of torch's threshold of 20, tiny log1p arguments)."""
    x = _float32(_inputs(batch=1, d_inner=16, d_state=2, length=601, seed=4))
    x["delta"] = torch.linspace(-30, 30, 601).expand(1, 16, 601).contiguous()
    x["delta_bias"] = torch.zeros(16)
    x["A"] = -torch.rand(16, 2) * 0.01  # long memories: every step's delta shows in the output
    got = selective_scan(**x, delta_softplus=True, return_last_state=True, backend="cpu")
    _close(got, _naive(x, delta_softplus=True))


@torch.no_grad()
def test_threads_split_the_channels(monkeypatch):
    """Channel blocks run in parallel threads for large scans: the same result as one thread."""
    x = _float32(_inputs(batch=2, d_inner=80, d_state=4, length=50, seed=5))
    one = selective_scan(**x, delta_softplus=True, return_last_state=True, backend="cpu")
    monkeypatch.setattr(kernels, "PARALLEL_ELEMENTS", 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        split = selective_scan(**x, delta_softplus=True, return_last_state=True, backend="cpu")
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(split, one, strict=True):
        assert torch.equal(a, b)


@torch.no_grad()
def test_streaming_step_in_place_equals_whole_scan():
    x = _float32(_inputs(batch=2, d_inner=20, d_state=4, length=41, seed=6))
    h0 = x.pop("initial_state")
    expected = selective_scan(**x, delta_softplus=True, initial_state=h0, return_last_state=True, backend="cpu")
    state, ys, start = h0.clone(), [], 0
    for size in (1, 3, 13, 24):
        piece = {k: v[..., start : start + size] if k in ("u", "delta", "z", "B", "C") else v for k, v in x.items()}
        y, new = selective_scan_step(state, **piece, delta_softplus=True, backend="cpu", in_place=True)
        assert new is state
        ys.append(y)
        start += size
    torch.testing.assert_close(torch.cat(ys, dim=-1), expected[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(state, expected[1], rtol=0, atol=1e-5)


def test_auto_picks_the_kernel_for_inference_only(monkeypatch):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    x = _float32(_inputs(length=8))
    assert resolve_backend("auto", x["u"]) == "cpu"
    assert resolve_backend("auto", x["u"], grad=True) == "reference"
    assert resolve_backend("auto", x["u"].double()) == "reference"
    with pytest.raises(ValueError, match="without gradients"):
        resolve_backend("cpu", x["u"], grad=True)
    with pytest.raises(ValueError, match="float32"):
        resolve_backend("cpu", x["u"].double())
    # under autograd `auto` runs the reference, whose gradients exist
    leaves = {k: v.requires_grad_() for k, v in x.items()}
    selective_scan(**leaves, delta_softplus=True).sum().backward()
    assert leaves["A"].grad is not None
    mixed = dict(x, A=x["A"].detach().double())
    with pytest.raises(ValueError, match="scan backend 'cpu' takes float32"):
        selective_scan(**{k: v.detach() for k, v in mixed.items()}, backend="cpu")


@pytest.mark.parametrize("arch", ["wavemamba-small"])
def test_wavemamba_with_the_kernel_equals_the_reference(arch):
    """The model's offline forward and its stream in 416- and 32-sample chunks, kernel against reference."""
    torch.manual_seed(0)
    model = create(arch, num_enc_layers=2, enc_dim=64, dec_dim=32).eval()
    x, query = torch.randn(1, 1, 3000) * 0.3, torch.eye(41)[:1]
    outputs = {}
    for backend in ("reference", "cpu"):
        set_scan_backend(model, backend)
        with torch.inference_mode():
            streamed = []
            for chunk in (416, 32):
                s = model.streamer(query)
                streamed.append(torch.cat([*(s.feed(p) for p in x.split(chunk, -1)), s.flush()], -1))
            outputs[backend] = (model(x, query), *streamed)
    for got, expected in zip(outputs["cpu"], outputs["reference"], strict=True):
        assert (got - expected).abs().max() <= 1e-5
