"""Compute counter: parameters and MACs against hand counts from layer shapes."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import tiny
from torch import nn

from tse_cli.models import create
from tse_cli.models.complexity import count, example_inputs, scan_macs


class Toy(nn.Module):
    """Conv1d(1, 4, 8, stride 4) over the mixture, then Linear(4, 6) per frame; the query is ignored."""

    sample_rate = 1000
    clue_kind = "class"

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 4, kernel_size=8, stride=4)
        self.linear = nn.Linear(4, 6)

    def forward(self, mixture: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        return self.linear(self.conv(mixture).transpose(1, 2))


def test_simple_layers_by_hand() -> None:
    result = count(Toy(), seconds=2.0)
    frames = (2000 - 8) // 4 + 1  # 498
    conv, linear = frames * 4 * 8, frames * 4 * 6
    assert result["params"] == (4 * 8 + 4) + (4 * 6 + 6)
    assert result["macs"] == conv + linear and result["macs_per_second"] == (conv + linear) / 2
    assert result["by_module"] == {"conv": conv, "linear": linear}
    assert result["scan_macs"] == result["other_macs"] == 0


def test_explicit_inputs_and_kwargs() -> None:
    class Scaled(Toy):
        def forward(self, mixture, query, repeat: int = 1):
            for _ in range(repeat):
                out = super().forward(mixture, query)
            return out

    single = count(Scaled(), inputs=(torch.randn(1, 1, 1000), torch.zeros(1, 41)))
    assert count(Scaled(), inputs=lambda model, seconds: (torch.randn(1, 1, 1000), None), repeat=3)["macs"] == (
        3 * single["macs"]
    )


def _extractor_front(E: int, layers: int, frames: int, L: int = 32, out_buf: int = 4) -> int:
    """in_conv + label embedding + encoder (depthwise taps + 1x1) + three grouped 1x1 projections + out conv."""
    in_conv = frames * E * 3 * L
    label = 41 * 512 + 512 * E
    encoder = layers * frames * (3 * E + E * E)
    projections = 3 * frames * E  # each output channel sees E/D inputs (or one), E outputs or D*E/D
    out_conv = (frames + out_buf) * E * (out_buf + 1) * L
    return in_conv + label + encoder + projections + out_conv


def test_wavemamba_by_hand() -> None:
    E, D, layers, n, seconds = 32, 16, 2, 8, 0.05
    model = create("wavemamba-small", enc_dim=E, dec_dim=D, num_enc_layers=layers, d_state=n)
    frames = math.ceil(round(seconds * 44100) / 32)
    di, r = 2 * D, math.ceil(D / 16)
    # in_proj, C = q_proj(in_proj_q(.)) as one d_model -> d_state product, conv, x_proj, dt_proj, out_proj
    mixer = frames * (D * 2 * di + D * n + di * 4 + di * (r + n) + r * di + di * D)
    scan = frames * di * (4 * n + 3)
    result = count(model, seconds)
    assert result["params"] == sum(p.numel() for p in model.parameters())
    assert result["scan_macs"] == scan == scan_macs(1, frames, di, n)
    assert result["macs"] == _extractor_front(E, layers, frames) + mixer + scan


def test_waveformer_by_hand() -> None:
    E, D, layers, seconds = 32, 16, 2, 0.05
    model = create("waveformer-small", enc_dim=E, dec_dim=D, num_enc_layers=layers)
    frames = math.ceil(round(seconds * 44100) / 32)
    windows = math.ceil(frames / 13)
    attention = 13 * D * D + 2 * 26 * D * D + 2 * 13 * 26 * D + 13 * D * D  # q, k+v, scores+values, out
    decoder = windows * (2 * attention + 2 * 13 * D * 2 * D)
    result = count(model, seconds)
    assert result["scan_macs"] == 0
    assert result["macs"] == _extractor_front(E, layers, frames) + decoder


@pytest.mark.parametrize("name", ["waveformer-large", "wavemamba-small"])
def test_meta_device_counts_without_computing(name: str) -> None:
    with torch.device("meta"):
        model = create(name)
    result = count(model)
    assert result["params"] == sum(p.numel() for p in model.parameters())
    assert 1e9 < result["macs_per_second"] < 2e10 and set(result["by_module"]) >= {"mask_gen", "label_embedding"}


def test_scans_do_not_run_while_counting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scan work is analytic: counting never executes a scan (that took minutes for av-sepmamba-large)."""
    from tse_cli.models.ssm import cpu_kernel, reference

    def fail(*args, **kwargs):
        raise AssertionError("a scan ran while counting")

    monkeypatch.setattr(reference, "reference_core", fail)
    monkeypatch.setattr(reference, "naive_core", fail)
    monkeypatch.setattr(cpu_kernel, "cpu_scan", fail)
    model = tiny("wavemamba-small")
    mixer = model.mask_gen.decoder.mixer
    result = count(model, 0.05)
    assert result["scan_macs"] == scan_macs(1, math.ceil(round(0.05 * 44100) / 32), mixer.d_inner, mixer.d_state)
    with torch.no_grad(), pytest.raises(AssertionError, match="a scan ran"):  # the model still scans afterwards
        model(*example_inputs(model, 0.05))
