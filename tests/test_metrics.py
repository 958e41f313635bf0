"""SI-SNR / SNR and their improvements against independent numpy formulas; summaries; the spectrogram picture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tse_cli.train.losses import neg_si_snr_loss, snr_sisnr_loss
from tse_cli.train.metrics import separation_metrics, si_snr, snr, summarize
from tse_cli.train.png import HOP, MARGIN, spectrogram_png


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


def read_png(path: Path) -> np.ndarray:
    """An RGB picture as (height, width, 3) uint8."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def test_spectrogram_picture_has_panels_axes_and_a_db_scale(tmp_path: Path) -> None:
    rate = 16000
    tone = np.sin(2 * np.pi * 2000 * np.arange(rate) / rate)  # 1 s at 2 kHz, then a quieter copy
    path = spectrogram_png(tmp_path / "s.png", [("a", tone), ("b", 0.01 * tone)], sample_rate=rate, height=64)
    picture = read_png(path)
    frames = -(-len(tone) // HOP) + 1
    left, top = MARGIN["left"], MARGIN["title"]
    assert picture.shape[1] == left + frames + MARGIN["right"]
    assert picture.shape[0] == 2 * (MARGIN["title"] + 64 + MARGIN["gap"]) + MARGIN["bottom"]
    panel = picture[top : top + 64, left : left + frames].astype(int)
    row = int(np.argmax(panel.sum(axis=(1, 2))))  # the brightest row is the tone's, low frequencies at the bottom
    assert abs(row - (64 - 1 - 2000 / (rate / 2) * 63)) <= 1.5
    assert panel[row].sum() > panel[5].sum() + 100 * frames
    second = picture[2 * top + 64 + MARGIN["gap"] :, left : left + frames][:64].astype(int)
    assert second[row].sum() < panel[row].sum()  # one dB scale: the quieter copy is darker
    axes = picture[:, :left].astype(int).sum(axis=2)
    assert (axes < 200).sum() > 50  # tick labels drawn in the left margin (kHz)
    bar = picture[top : top + 64, left + frames + 12 : left + frames + 24]
    assert bar[0].mean() > bar[-1].mean()  # the colour bar: bright (0 dB) at the top
    assert not list(tmp_path.glob(".*"))  # no temporary file left
