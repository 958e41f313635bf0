"""Loudness as the Waveformer recipe needs it: pyloudnorm's integrated loudness and Scaper's event loudness.

The expected values were computed with pyloudnorm 0.2.0 (`Meter(rate).integrated_loudness`) and Scaper 1.6's
`get_integrated_lufs` (its code, which needs only pyloudnorm: tile clips under 0.5 s ceil(0.5 / duration) times,
then max(loudness, -70)) on the signals `_signals` makes; neither library is a dependency. Where pyloudnorm is
installed, `test_agrees_with_pyloudnorm_on_random_lengths` also compares the two directly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tse_cli.data.loudness import integrated_lufs, scaper_lufs

# name: (pyloudnorm's integrated loudness, or None where it refuses a clip under 400 ms; Scaper's)
EXPECTED = {
    "noise_44k_2.537s": (-18.09446822564294, -18.09446822564294),
    "noise_16k_1.23s": (-20.288345814494004, -20.288345814494004),
    "noise_44k_0.46s": (-20.36401132525635, -19.704585950951312),  # under 0.5 s: Scaper measures it twice over
    "noise_44k_0.3s": (None, -19.226399834757498),
    "noise_16k_0.07s": (None, -19.094548507093066),
    "noise_44k_6.0s": (-17.000894344612178, -17.000894344612178),
    "quiet_tone_44k_0.75s": (-math.inf, -70.0),  # every block under the absolute gate: Scaper's floor
}


NOISE = [  # name, rate, seconds
    ("noise_44k_2.537s", 44100, 2.537),
    ("noise_16k_1.23s", 16000, 1.23),
    ("noise_44k_0.46s", 44100, 0.46),
    ("noise_44k_0.3s", 44100, 0.3),
    ("noise_16k_0.07s", 16000, 0.07),
    ("noise_44k_6.0s", 44100, 6.0),
]


def _signals() -> dict[str, tuple[np.ndarray, int]]:
    """Noise whose level rises over the clip (so both gates matter), at lengths that end between 100 ms hops."""
    rng = np.random.default_rng(1770)
    out = {}
    for name, rate, seconds in NOISE:
        n = round(seconds * rate)
        out[name] = (rng.standard_normal(n) * 0.2 * np.linspace(0.02, 1.0, n) ** 3, rate)
    t = np.arange(round(0.75 * 44100)) / 44100
    out["quiet_tone_44k_0.75s"] = (1e-4 * np.sin(2 * np.pi * 440 * t), 44100)
    return out


@pytest.mark.parametrize("name", list(EXPECTED))
def test_pyloudnorm_and_scaper_values(name: str) -> None:
    audio, rate = _signals()[name]
    meter, scaper = EXPECTED[name]
    if meter is None:
        assert integrated_lufs(audio, rate) == -math.inf
    else:
        assert integrated_lufs(audio, rate) == pytest.approx(meter, abs=1e-9)
    assert scaper_lufs(audio, rate) == pytest.approx(scaper, abs=1e-9)


def test_bs1770_reference_tones_and_silence() -> None:
    t = np.arange(5 * 48000) / 48000
    assert integrated_lufs(np.sin(2 * np.pi * 997 * t), 48000) == pytest.approx(-3.01, abs=0.06)
    t44 = np.arange(44100) / 44100
    assert integrated_lufs(0.1 * np.sin(2 * np.pi * 997 * t44), 44100) == pytest.approx(-23.01, abs=0.06)
    assert integrated_lufs(np.zeros(48000), 48000) == -math.inf
    assert scaper_lufs(np.zeros(48000), 48000) == -70.0 and scaper_lufs(np.zeros(0), 48000) == -70.0
    short = np.sin(2 * np.pi * 997 * t[:4800])  # 0.1 s: repeated 5 times (0.5 s) before measuring
    assert scaper_lufs(short, 48000) == pytest.approx(-3.01, abs=0.1)


def test_agrees_with_pyloudnorm_on_random_lengths() -> None:
    pyloudnorm = pytest.importorskip("pyloudnorm", reason="pyloudnorm is not installed (not a tse dependency)")
    rng = np.random.default_rng(0)
    for _ in range(20):
        rate = int(rng.choice([16000, 22050, 44100, 48000]))
        n = int(rng.integers(int(0.4 * rate), 4 * rate))
        audio = rng.standard_normal(n) * 0.1 * np.linspace(0.01, 1.0, n) ** 2
        assert integrated_lufs(audio, rate) == pytest.approx(
            pyloudnorm.Meter(rate).integrated_loudness(audio), abs=1e-9
        )
