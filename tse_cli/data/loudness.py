"""ITU-R BS.1770-4 integrated loudness (LUFS) of mono audio, measured as pyloudnorm does, and the loudness
Scaper places events by (`scaper_lufs`: short clips repeated, a floor at -70 LUFS).

K-weighting (high shelf +4 dB at 1.5 kHz, high pass at 38 Hz, coefficients derived for any rate), mean square
over 400 ms blocks with 75 % overlap, an absolute gate at -70 LUFS and a relative gate 10 LU below the
ungated mean, with pyloudnorm's block count and bounds (a last partial block counts, scaled as a whole one).
Checked against pyloudnorm 0.2.0 and Scaper 1.6's `get_integrated_lufs` (tests/test_loudness.py: to 1e-9 LU;
the K-weighting runs in torchaudio's lfilter instead of scipy's, so the last bits differ).

Why not `torchaudio.functional.loudness`: the Waveformer recipe places events at SNRs as Scaper does, so it
needs Scaper's meter (pyloudnorm) numbers, and torchaudio's differs in two ways that recipe meets. Its biquads
clamp the K-weighted signal to [-1, 1] (`lfilter(clamp=True)`), so loud mixtures read low: -25.27 against
pyloudnorm's and ours -25.246 LUFS on the published Waveformer sample (identical once it is scaled below the
clamp); and it raises on clips shorter than one 400 ms block, which FSD foregrounds often are.
"""

from __future__ import annotations

import math

import numpy as np

STEP = 0.25  # block hop, as a fraction of the block (75 % overlap)
ABSOLUTE_GATE = -70.0  # LUFS


def _biquad(kind: str, gain_db: float, q: float, fc: float, rate: int) -> tuple[list[float], list[float]]:
    """(b, a) of the RBJ-style shelf / high-pass sections BS.1770 specifies, at `rate` Hz."""
    a_gain = 10 ** (gain_db / 40)
    w0 = 2 * math.pi * fc / rate
    alpha = math.sin(w0) / (2 * q)
    cw = math.cos(w0)
    if kind == "high_shelf":
        sq = 2 * math.sqrt(a_gain) * alpha
        b = [
            a_gain * ((a_gain + 1) + (a_gain - 1) * cw + sq),
            -2 * a_gain * ((a_gain - 1) + (a_gain + 1) * cw),
            a_gain * ((a_gain + 1) + (a_gain - 1) * cw - sq),
        ]
        a = [
            (a_gain + 1) - (a_gain - 1) * cw + sq,
            2 * ((a_gain - 1) - (a_gain + 1) * cw),
            (a_gain + 1) - (a_gain - 1) * cw - sq,
        ]
    else:  # high_pass
        b = [(1 + cw) / 2, -(1 + cw), (1 + cw) / 2]
        a = [1 + alpha, -2 * cw, 1 - alpha]
    return [x / a[0] for x in b], [x / a[0] for x in a]


def k_weight(audio: np.ndarray, rate: int) -> np.ndarray:
    """K-weighted copy of (T,) float audio."""
    import torch
    import torchaudio.functional as AF

    x = torch.from_numpy(np.asarray(audio, dtype=np.float64))
    for kind, gain, q, fc in (("high_shelf", 4.0, 1 / math.sqrt(2), 1500.0), ("high_pass", 0.0, 0.5, 38.0)):
        b, a = _biquad(kind, gain, q, fc, rate)
        x = AF.lfilter(x, torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64), clamp=False)
    return x.numpy()


def integrated_lufs(audio: np.ndarray, rate: int, block: float = 0.4) -> float:
    """Integrated loudness of (T,) audio in LUFS, as pyloudnorm's `Meter(rate).integrated_loudness` measures it:
    round((T / rate - block) / (block / 4)) + 1 blocks, block j over samples [int(block (j / 4) rate),
    int(block (j / 4 + 1) rate)) (the last one may end early: it is still divided by a whole block), the absolute
    gate (>= -70) for the relative threshold and strict gates (> both) for the final mean. -inf for silence and
    for audio shorter than one block (which pyloudnorm refuses)."""
    y = k_weight(np.asarray(audio, dtype=np.float64), rate)
    if y.size < block * rate:
        return -math.inf
    count = int(np.round((y.size / rate - block) / (block * STEP))) + 1
    power = np.square(y)  # once: the blocks overlap, each sample is in four of them
    z = np.array(
        [
            (1.0 / (block * rate)) * np.sum(power[int(block * (j * STEP) * rate) : int(block * (j * STEP + 1) * rate)])
            for j in range(count)
        ]
    )
    with np.errstate(divide="ignore"):
        loud = -0.691 + 10.0 * np.log10(z)
        gated = z[loud >= ABSOLUTE_GATE]
        if gated.size == 0:
            return -math.inf
        relative = -0.691 + 10.0 * np.log10(np.mean(gated)) - 10.0
        final = z[(loud > relative) & (loud > ABSOLUTE_GATE)]
        return float(-0.691 + 10.0 * np.log10(np.mean(final))) if final.size else -math.inf


def scaper_lufs(audio: np.ndarray, rate: int, min_seconds: float = 0.5) -> float:
    """The loudness Scaper (1.6, `scaper.audio.get_integrated_lufs`) scales an event by: audio shorter than
    `min_seconds` repeated ceil(min_seconds / its duration) times end to end, then `integrated_lufs`, at least
    -70 (so a silent or all-gated clip reads -70, never -inf). Empty audio reads -70 too (Scaper fails on it)."""
    audio = np.asarray(audio, dtype=np.float64)
    if audio.size and audio.size / rate < min_seconds:
        audio = np.tile(audio, int(np.ceil(min_seconds / (audio.size / float(rate)))))
    return max(integrated_lufs(audio, rate), ABSOLUTE_GATE) if audio.size else ABSOLUTE_GATE
