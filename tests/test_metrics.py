"""SI-SNR / SNR and their improvements against independent numpy formulas; summaries; the PNG writer."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch

from tse_cli.train.losses import neg_si_snr_loss, snr_sisnr_loss
from tse_cli.train.metrics import separation_metrics, si_snr, snr, summarize
from tse_cli.train.png import encode_png, spectrogram_png


def np_si_snr(est: np.ndarray, ref: np.ndarray) -> float:
    est, ref = est - est.mean(), ref - ref.mean()
    target = np.dot(est, ref) / np.dot(ref, ref) * ref
    return 10 * np.log10(np.sum(target**2) / np.sum((est - target) ** 2))


def np_snr(est: np.ndarray, ref: np.ndarray) -> float:
    return 10 * np.log10(np.sum(ref**2) / np.sum((ref - est) ** 2))


def test_metrics_equal_the_numpy_formulas_on_random_signals() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((3, 2000))
    est = ref * 0.7 + 0.3 * rng.standard_normal((3, 2000)) + 0.05
    mix = ref + rng.standard_normal((3, 2000))
    out = separation_metrics(*(torch.from_numpy(x) for x in (est, mix, ref)))
    for i in range(3):
        assert out["si_snr"][i].item() == pytest.approx(np_si_snr(est[i], ref[i]), abs=1e-6)
        assert out["snr"][i].item() == pytest.approx(np_snr(est[i], ref[i]), abs=1e-6)
        assert out["si_snri"][i].item() == pytest.approx(
            np_si_snr(est[i], ref[i]) - np_si_snr(mix[i], ref[i]), abs=1e-6
        )
        assert out["snri"][i].item() == pytest.approx(np_snr(est[i], ref[i]) - np_snr(mix[i], ref[i]), abs=1e-6)


def test_known_values() -> None:
    t = np.arange(4410) / 44100
    ref = np.sin(2 * np.pi * 440 * t)
    noise = np.sin(2 * np.pi * 1000 * t)  # orthogonal to ref over whole periods, equal power
    est = ref + noise * 10 ** (-20 / 20)  # 20 dB below
    ref_t, est_t = torch.from_numpy(ref), torch.from_numpy(est)
    assert si_snr(est_t, ref_t).item() == pytest.approx(20.0, abs=1e-3)
    assert snr(est_t, ref_t).item() == pytest.approx(20.0, abs=1e-3)
    assert si_snr(5 * est_t, ref_t).item() == pytest.approx(20.0, abs=1e-3)  # scale-invariant
    assert snr(0.5 * ref_t, ref_t).item() == pytest.approx(20 * np.log10(2), abs=1e-6)  # not scale-invariant


def test_losses_are_the_weighted_negative_metrics() -> None:
    rng = np.random.default_rng(1)
    ref = torch.from_numpy(rng.standard_normal((4, 1, 500)))
    est = ref + 0.5 * torch.from_numpy(rng.standard_normal((4, 1, 500)))
    expected = -(0.9 * snr(est, ref) + 0.1 * si_snr(est, ref)).mean()
    assert snr_sisnr_loss(est, ref).item() == pytest.approx(expected.item())
    assert neg_si_snr_loss(est, ref).item() == pytest.approx(-si_snr(est, ref).mean().item())
    est.requires_grad_(True)
    snr_sisnr_loss(est, ref).backward()
    assert torch.isfinite(est.grad).all()


def test_summary_mean_median_per_class_and_nonfinite() -> None:
    records = [
        {"label": "Bark", "si_snri": 1.0, "snri": 2.0, "si_snr": 0.0, "snr": 0.0},
        {"label": "Bark", "si_snri": 3.0, "snri": 4.0, "si_snr": 0.0, "snr": 0.0},
        {"label": "Bark+Cough", "si_snri": 8.0, "snri": 0.0, "si_snr": 0.0, "snr": 0.0},
        {"label": "Cough", "si_snri": float("nan"), "snri": 0.0, "si_snr": 0.0, "snr": 0.0},
    ]
    summary = summarize(records)
    assert summary["count"] == 3 and summary["nonfinite"] == 1
    assert summary["si_snri"] == {"mean": 4.0, "median": 3.0}
    assert summary["per_class"]["Bark"]["si_snri"] == {"mean": 4.0, "median": 3.0}
    assert summary["per_class"]["Bark"]["count"] == 3
    assert summary["per_class"]["Cough"]["si_snri"]["mean"] == 8.0


def _decode_png(data: bytes) -> np.ndarray:
    """A minimal independent reader for the 8-bit RGB, filter-0 PNGs `encode_png` writes."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])[0] == zlib.crc32(kind + body)
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
    width, height = size
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, 1 + 3 * width)
    assert (rows[:, 0] == 0).all()
    return rows[:, 1:].reshape(height, width, 3)


def test_png_round_trip_and_spectrogram_picture(tmp_path) -> None:
    image = np.random.default_rng(2).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert np.array_equal(_decode_png(encode_png(image)), image)
    tone = np.sin(2 * np.pi * 1000 * np.arange(22050) / 44100)
    path = spectrogram_png(tmp_path / "s.png", [("a", tone), ("b", 0.01 * tone)], height=64)
    picture = _decode_png(path.read_bytes())
    assert picture.shape[1] == -(-len(tone) // 256) + 1 and picture.shape[0] == 2 * (64 + 22)
    assert not list(tmp_path.glob(".*"))  # no temporary file left
