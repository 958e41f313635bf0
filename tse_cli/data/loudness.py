"""ITU-R BS.1770-4 integrated loudness (LUFS) of mono audio, as Scaper uses to place events at an SNR.

K-weighting (high shelf +4 dB at 1.5 kHz, high pass at 38 Hz, coefficients derived for any rate), mean square
over 400 ms blocks with 75 % overlap, an absolute gate at -70 LUFS and a relative gate 10 LU below the
ungated mean. Clips shorter than `min_seconds` are repeated end to end until they are that long (Scaper does
the same, since one 400 ms block is the minimum measurable length).

Why not `torchaudio.functional.loudness`: the Waveformer recipe places events at SNRs as Scaper does, so it
needs Scaper's meter (pyloudnorm) numbers, and torchaudio's differs in two ways that recipe meets. Its biquads
clamp the K-weighted signal to [-1, 1] (`lfilter(clamp=True)`), so loud mixtures read low: -25.27 against
pyloudnorm's and ours -25.246 LUFS on the published Waveformer sample (identical once it is scaled below the
clamp); and it raises on clips shorter than one 400 ms block, which FSD foregrounds often are. Known difference
from pyloudnorm: on a length that does not end on a 100 ms hop, pyloudnorm also counts a last partial block
(scaled as a whole one) and ours does not (0.03-0.3 LU on most such lengths).
"""

from __future__ import annotations

import math

import numpy as np


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


def integrated_lufs(audio: np.ndarray, rate: int, min_seconds: float = 0.5, block: float = 0.4) -> float:
    """Integrated loudness of (T,) audio in LUFS; -inf for silence."""
    audio = np.asarray(audio, dtype=np.float64)
    need = int(math.ceil(min_seconds * rate))
    if 0 < audio.size < need:
        audio = np.tile(audio, need // audio.size + 1)[:need]
    y = k_weight(audio, rate)
    size, hop = int(block * rate), int(block * rate * 0.25)
    if y.size < size:
        return -math.inf
    starts = np.arange(0, y.size - size + 1, hop)
    power = np.cumsum(np.concatenate([[0.0], y**2]))
    z = (power[starts + size] - power[starts]) / size
    with np.errstate(divide="ignore"):
        loud = -0.691 + 10 * np.log10(z)
    gated = z[loud >= -70.0]
    if gated.size == 0:
        return -math.inf
    relative = -0.691 + 10 * math.log10(gated.mean()) - 10.0
    with np.errstate(divide="ignore"):
        final = z[(loud >= -70.0) & (loud >= relative)]
    return float(-0.691 + 10 * math.log10(final.mean()))
