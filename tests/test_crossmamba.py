"""CrossMamba / Mamba layers: the published implementation's outputs and key names, parameter counts,
streaming against offline, and the self-Mamba mixer against eq. (20) written out."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from tse_cli.models.crossmamba import (
    BiCrossMamba,
    BiMamba,
    CrossMambaBlock,
    MambaBlock,
    MambaMixer,
    set_scan_backend,
)


@pytest.fixture(scope="module")
def official(fixtures):
    """The published CrossMamba wrapper's weights (float64, d_model 32, d_state 8) and its outputs."""
    folder = fixtures / "crossmamba_official_tiny"
    model = BiCrossMamba(32, d_state=8, d_conv=4, expand=2, dtype=torch.float64)
    model.load_state_dict(load_file(folder / "state_dict.safetensors"), strict=True)
    return model.eval(), load_file(folder / "io.safetensors")


# The published code casts A, D and delta_bias to float32 before its float64 scan: 2e-10 differences.
EXACT = {"rtol": 0, "atol": 1e-9}


@pytest.mark.parametrize("backend", ["reference", "naive"])
def test_reproduces_published_mixer_block_and_bidirectional(official, backend):
    model, io = official
    set_scan_backend(model, backend)
    query, value = io["query"], io["value"]
    with torch.no_grad():
        torch.testing.assert_close(model.mamba.mixer(query, value), io["mixer_out"], **EXACT)
        torch.testing.assert_close(model.mamba(query, value), io["causal_block_out"], **EXACT)
        torch.testing.assert_close(model(query, value), io["bidirectional_out"], **EXACT)


def test_published_key_names():
    keys = set(BiCrossMamba(32, d_state=8).state_dict())
    block = {
        "mixer.in_proj.weight",
        "mixer.in_proj_q.weight",
        "mixer.q_proj.weight",
        "mixer.x_proj.weight",
        "mixer.dt_proj.weight",
        "mixer.dt_proj.bias",
        "mixer.conv1d.weight",
        "mixer.conv1d.bias",
        "mixer.out_proj.weight",
        "mixer.A_log",
        "mixer.D",
        "norm.weight",
        "norm_query.weight",
    }
    assert keys == {f"{side}.{k}" for side in ("mamba", "mamba_bw") for k in block}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts():
    assert _count(CrossMambaBlock(256, d_state=16)) == 569_344
    assert _count(CrossMambaBlock(128, d_state=16)) == 149_504
    assert _count(BiMamba(256)) == 876_032
    assert _count(BiCrossMamba(256)) == 2 * 569_344


def test_mamba_initialisation():
    mixer = CrossMambaBlock(64, d_state=8).mixer
    torch.testing.assert_close(-torch.exp(mixer.A_log), -torch.arange(1.0, 9.0).expand(128, 8))
    assert torch.equal(mixer.D, torch.ones(128))
    dt = F.softplus(mixer.dt_proj.bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    assert mixer.dt_proj.weight.abs().max() <= mixer.dt_rank**-0.5


def _streamed(block, inputs, sizes):
    """Feed `inputs` (tuple of (batch, length, d) sequences) through block.step in chunks of `sizes`."""
    state = block.init_state(inputs[0].shape[0])
    outs, start = [], 0
    for size in sizes:
        out, state = block.step(*(x[:, start : start + size] for x in inputs), state)
        outs.append(out)
        start += size
    assert start == inputs[0].shape[1]
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("cls", [CrossMambaBlock, MambaBlock])
def test_streaming_equals_offline(cls):
    torch.manual_seed(0)
    block = cls(16, d_state=4, dtype=torch.float64)
    with torch.no_grad():  # random, non-trivial weights everywhere (D, biases, norms)
        for p in block.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    length = 97
    inputs = tuple(torch.randn(2, length, 16, dtype=torch.float64) for _ in range(2 if cls is CrossMambaBlock else 1))
    offline = block(*inputs)
    g = torch.Generator().manual_seed(1)
    sizes = [1, 1, 2]
    while sum(sizes) < length:
        sizes.append(min(int(torch.randint(1, 20, (1,), generator=g)), length - sum(sizes)))
    torch.testing.assert_close(_streamed(block, inputs, sizes), offline, rtol=0, atol=1e-12)
    torch.testing.assert_close(_streamed(block, inputs, [1] * length), offline, rtol=0, atol=1e-12)
    torch.testing.assert_close(_streamed(block, inputs, [length]), offline, rtol=0, atol=1e-12)


def test_init_state_shapes_and_dtypes():
    block = CrossMambaBlock(16, d_state=4, d_conv=3)
    state = block.init_state(3)
    assert state.conv.shape == (3, 32, 2) and state.ssm.shape == (3, 32, 4)
    assert state.ssm.dtype == torch.float32
    assert block.init_state(1, dtype=torch.bfloat16).ssm.dtype == torch.float32
    assert block.init_state(1, dtype=torch.float64).ssm.dtype == torch.float64


def test_backends_give_same_block_outputs_and_gradients():
    torch.manual_seed(0)
    block = CrossMambaBlock(16, d_state=4, dtype=torch.float64)
    query, value = (torch.randn(2, 40, 16, dtype=torch.float64) for _ in range(2))
    results = []
    for backend in ("naive", "reference"):
        block.zero_grad()
        set_scan_backend(block, backend)
        out = block(query, value)
        out.square().sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in block.parameters()]))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=0, atol=1e-12)
    for g1, g0 in zip(results[1][1], results[0][1], strict=True):
        torch.testing.assert_close(g1, g0, rtol=0, atol=1e-10)


def test_mismatched_query_is_an_error():
    block = CrossMambaBlock(8, d_state=2)
    with pytest.raises(ValueError, match="same batch and length"):
        block(torch.randn(1, 4, 8), torch.randn(1, 5, 8))


def test_unknown_backend_is_an_error():
    block = MambaBlock(8, d_state=2, scan_backend="turbo")
    with pytest.raises(ValueError, match="unknown scan backend 'turbo'"):
        block(torch.randn(1, 3, 8))


def test_self_mamba_mixer_equals_attention_form():
    """MambaMixer against eq. (20) written out: x_proj -> (dt, B, C) from the same sequence, causal conv."""
    torch.manual_seed(0)
    mixer = MambaMixer(8, d_state=3, d_conv=3, dtype=torch.float64)
    x = torch.randn(2, 11, 8, dtype=torch.float64)
    xs, z = mixer.in_proj(x).chunk(2, dim=-1)  # (b, L, d_inner)
    conv = F.conv1d(xs.transpose(1, 2), mixer.conv1d.weight, mixer.conv1d.bias, padding=2, groups=16)
    u = F.silu(conv[..., :11]).transpose(1, 2)  # (b, L, d_inner)
    dt, B, C = mixer.x_proj(u).split([1, 3, 3], dim=-1)
    delta = F.softplus(mixer.dt_proj(dt))  # (b, L, d_inner)
    A = -torch.exp(mixer.A_log)  # (d_inner, n)
    c = delta.cumsum(1)
    decay = torch.exp((c[:, :, None] - c[:, None, :])[..., None] * A)  # (b, i, j, d, n)
    decay = decay * torch.ones(11, 11, dtype=torch.bool).tril()[None, :, :, None, None]
    y = torch.einsum("bin,bijdn,bjn,bjd->bid", C, decay, B, delta * u)
    y = (y + mixer.D * u) * F.silu(z)
    torch.testing.assert_close(mixer(x), mixer.out_proj(y), rtol=0, atol=1e-12)
