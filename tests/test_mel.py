"""DPM-TSE's log-mel front end against an independent numpy computation, and its normalisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tse_cli.models.mel import LogMel, denormalize, normalize, num_frames


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear (3 per 200 Hz) below 1 kHz, logarithmic (27 per factor 6.4) above."""
    hz = np.asarray(hz, dtype=np.float64)
    return np.where(hz < 1000.0, hz * 3 / 200, 15 + np.log(np.maximum(hz, 1e-9) / 1000) * 27 / np.log(6.4))


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return np.where(mel < 15, mel * 200 / 3, 1000 * np.exp((mel - 15) * np.log(6.4) / 27))


def _slaney_filterbank(sr: int, n_fft: int, n_mels: int, fmax: float) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangles on the slaney scale, each scaled to unit area (2 / bandwidth)."""
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(fmax), n_mels + 2))
    bank = np.zeros((n_mels, freqs.size))
    for m in range(n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        rising = (freqs - lo) / (mid - lo)
        falling = (hi - freqs) / (hi - mid)
        bank[m] = np.maximum(0, np.minimum(rising, falling)) * 2 / (hi - lo)
    return bank


def _numpy_log_mel(wave: np.ndarray) -> np.ndarray:
    """The published recipe in float64 numpy: reflect pad 432, periodic Hann STFT 1024/160, |X|, mel, log."""
    n_fft, hop = 1024, 160
    padded = np.pad(wave, (432, 432), mode="reflect")
    count = 1 + (padded.size - n_fft) // hop
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = np.stack([padded[i * hop : i * hop + n_fft] * window for i in range(count)])
    magnitude = np.abs(np.fft.rfft(frames, axis=-1)).T  # (freqs, frames)
    mel = _slaney_filterbank(16000, n_fft, 64, 8000.0) @ magnitude
    return np.log(np.maximum(mel, 1e-5))


def test_log_mel_matches_independent_numpy() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(8000) / 16000
    wave = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size) + 0.2 * np.sin(2 * np.pi * 3100 * t)
    expected = _numpy_log_mel(wave)
    got = LogMel()(torch.tensor(wave, dtype=torch.float32)[None])[0].double().numpy()
    assert got.shape == expected.shape == (64, 50)
    np.testing.assert_allclose(got, expected, atol=2e-4)


def test_frames_and_padding_with_silence() -> None:
    wave = torch.randn(2, 1000)
    mel = LogMel()(wave)
    assert mel.shape == (2, 64, num_frames(1000)) == (2, 64, 6)
    padded = LogMel()(wave, frames=16)
    assert padded.shape == (2, 64, 16)
    torch.testing.assert_close(padded[..., :6], mel)
    assert torch.all(padded[..., 6:] == math.log(1e-5))


def test_too_short_to_reflect_is_zero_extended() -> None:
    mel = LogMel()(torch.randn(1, 100), frames=8)
    assert mel.shape == (1, 64, 8) and torch.isfinite(mel).all()


def test_normalisation_maps_clip_range_to_unit_interval_and_back() -> None:
    log_mel = torch.tensor([-20.0, -12.0, -4.75, 2.5, 7.0])
    x = normalize(log_mel)
    torch.testing.assert_close(x, torch.tensor([-1.0, -1.0, 0.0, 1.0, 1.0]))
    torch.testing.assert_close(denormalize(x), log_mel.clamp(-12, 2.5))
    assert denormalize(torch.tensor([1.7, -3.0])).tolist() == pytest.approx([2.5, -12.0])
