"""Training losses (to minimise) built on `tse_cli.train.metrics`; inputs (..., samples), output a scalar."""

from __future__ import annotations

from torch import Tensor

from tse_cli.train.metrics import si_snr, snr


def snr_sisnr_loss(estimate: Tensor, reference: Tensor, snr_weight: float = 0.9, si_snr_weight: float = 0.1) -> Tensor:
    """Waveformer/WaveMamba loss: -(snr_weight * SNR + si_snr_weight * SI-SNR), mean over the batch (dB)."""
    return -(snr_weight * snr(estimate, reference) + si_snr_weight * si_snr(estimate, reference)).mean()


def neg_si_snr_loss(estimate: Tensor, reference: Tensor) -> Tensor:
    """AV-SepFormer/AV-SepMamba loss: -SI-SNR, mean over the batch (dB)."""
    return -si_snr(estimate, reference).mean()
