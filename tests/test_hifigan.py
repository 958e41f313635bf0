"""The 16 kHz HiFi-GAN vocoder: the published generator's output, parameter count, output length."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tse_cli.models.hifigan import HiFiGAN


def test_reproduces_published_generator(fixtures: Path) -> None:
    folder = fixtures / "hifigan16k_official_tiny"
    state = load_file(folder / "state_dict.safetensors")
    io = load_file(folder / "io.safetensors")
    vocoder = HiFiGAN(upsample_initial_channel=64).eval()
    vocoder.load_state_dict({k.removeprefix("vocoder."): v for k, v in state.items()}, strict=True)
    with torch.no_grad():
        wave = vocoder(io["log_mel"])
    assert wave.shape == io["waveform"].shape == (1, 1, 160 * 20 + 32)
    torch.testing.assert_close(wave, io["waveform"], rtol=0, atol=1e-5)


def test_published_parameter_count() -> None:
    with torch.device("meta"):
        vocoder = HiFiGAN()
    assert sum(p.numel() for p in vocoder.parameters()) == 55_264_897


def test_output_length_is_160_per_frame_plus_32() -> None:
    vocoder = HiFiGAN(upsample_initial_channel=32)
    with torch.no_grad():
        wave = vocoder(torch.randn(2, 64, 7))
    assert wave.shape == (2, 1, 160 * 7 + 32)
    assert wave.abs().max() <= 1


def test_rejects_widths_that_vanish_before_the_last_stage() -> None:
    with pytest.raises(ValueError, match="upsample_initial_channel 16 must be a multiple of 32"):
        HiFiGAN(upsample_initial_channel=16)
