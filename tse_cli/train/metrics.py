"""Separation metrics (data.md): SI-SNR, SNR and their improvements over the mixture, plus summaries.

All functions take signals with time on the last axis, (..., samples), and return one value per signal in dB,
shape (...). They are differentiable, so the losses in `tse_cli.train.losses` reuse them.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

EPS = 1e-8


def snr(estimate: Tensor, reference: Tensor, eps: float = EPS) -> Tensor:
    """SNR in dB: 10 log10(|ref|^2 / |ref - est|^2), no mean removal."""
    signal = reference.pow(2).sum(-1)
    noise = (reference - estimate).pow(2).sum(-1)
    return 10 * torch.log10((signal + eps) / (noise + eps))


def si_snr(estimate: Tensor, reference: Tensor, eps: float = EPS) -> Tensor:
    """Scale-invariant SNR in dB: both zero-meaned, s_t = <est,ref> ref / |ref|^2, 10 log10(|s_t|^2 / |est - s_t|^2)."""
    estimate = estimate - estimate.mean(-1, keepdim=True)
    reference = reference - reference.mean(-1, keepdim=True)
    scale = (estimate * reference).sum(-1, keepdim=True) / (reference.pow(2).sum(-1, keepdim=True) + eps)
    projection = scale * reference
    return 10 * torch.log10((projection.pow(2).sum(-1) + eps) / ((estimate - projection).pow(2).sum(-1) + eps))


def separation_metrics(estimate: Tensor, mixture: Tensor, reference: Tensor) -> dict[str, Tensor]:
    """`si_snr`, `si_snri`, `snr`, `snri` (dB, float64) of an estimate, the improvements being over the mixture."""
    estimate, mixture, reference = (x.double() for x in (estimate, mixture, reference))
    out = {"si_snr": si_snr(estimate, reference), "snr": snr(estimate, reference)}
    out["si_snri"] = out["si_snr"] - si_snr(mixture, reference)
    out["snri"] = out["snr"] - snr(mixture, reference)
    return out


METRICS = ("si_snri", "snri", "si_snr", "snr")


def _stats(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "median": statistics.median(values)}


def summarize(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Mean and median of every metric over `records` (dicts with `METRICS` and a `label`), overall and per class.

    A multi-target example ("Bark+Cough") counts towards each of its classes. Non-finite values are excluded
    and counted in `nonfinite`.
    """
    records = list(records)
    overall: dict[str, list[float]] = defaultdict(list)
    per_class: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    nonfinite = 0
    for record in records:
        if not all(math.isfinite(record[m]) for m in METRICS):
            nonfinite += 1
            continue
        for metric in METRICS:
            overall[metric].append(record[metric])
            for label in str(record["label"]).split("+"):
                per_class[label][metric].append(record[metric])
    summary: dict[str, Any] = {
        "count": len(records) - nonfinite,
        "nonfinite": nonfinite,
        **{m: _stats(overall[m]) for m in METRICS if overall[m]},
        "per_class": {
            label: {"count": len(values[METRICS[0]]), **{m: _stats(values[m]) for m in METRICS}}
            for label, values in sorted(per_class.items())
        },
    }
    return summary
