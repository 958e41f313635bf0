"""Spectrogram pictures as PNG files with numpy and zlib only (no plotting dependency).

`spectrogram_png(path, panels, sample_rate)` stacks one log-magnitude spectrogram per (title, signal) pair,
low frequencies at the bottom, with the title written above each panel in a 5x7 pixel font.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from tse_cli.atomic import write_bytes

# ---- PNG encoding ----


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an 8-bit RGB image (height, width, 3) uint8."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected (height, width, 3) uint8, got {rgb.shape} {rgb.dtype}")
    height, width, _ = rgb.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), rgb.reshape(height, width * 3)], axis=1)  # filter 0
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit truecolour, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + (_chunk(b"IEND", b""))
    )


# ---- text ----

# 5x7 glyphs, one 5-bit row per entry (most significant bit = leftmost pixel)
_FONT = {
    "A": (14, 17, 17, 31, 17, 17, 17), "B": (30, 17, 17, 30, 17, 17, 30), "C": (14, 17, 16, 16, 16, 17, 14),
    "D": (30, 17, 17, 17, 17, 17, 30), "E": (31, 16, 16, 30, 16, 16, 31), "F": (31, 16, 16, 30, 16, 16, 16),
    "G": (14, 17, 16, 23, 17, 17, 15), "H": (17, 17, 17, 31, 17, 17, 17), "I": (14, 4, 4, 4, 4, 4, 14),
    "J": (7, 2, 2, 2, 2, 18, 12), "K": (17, 18, 20, 24, 20, 18, 17), "L": (16, 16, 16, 16, 16, 16, 31),
    "M": (17, 27, 21, 21, 17, 17, 17), "N": (17, 25, 21, 19, 17, 17, 17), "O": (14, 17, 17, 17, 17, 17, 14),
    "P": (30, 17, 17, 30, 16, 16, 16), "Q": (14, 17, 17, 17, 21, 18, 13), "R": (30, 17, 17, 30, 20, 18, 17),
    "S": (15, 16, 16, 14, 1, 1, 30), "T": (31, 4, 4, 4, 4, 4, 4), "U": (17, 17, 17, 17, 17, 17, 14),
    "V": (17, 17, 17, 17, 17, 10, 4), "W": (17, 17, 17, 21, 21, 21, 10), "X": (17, 17, 10, 4, 10, 17, 17),
    "Y": (17, 17, 10, 4, 4, 4, 4), "Z": (31, 1, 2, 4, 8, 16, 31), "0": (14, 17, 19, 21, 25, 17, 14),
    "1": (4, 12, 4, 4, 4, 4, 14), "2": (14, 17, 1, 2, 4, 8, 31), "3": (30, 1, 1, 14, 1, 1, 30),
    "4": (2, 6, 10, 18, 31, 2, 2), "5": (31, 16, 30, 1, 1, 17, 14), "6": (6, 8, 16, 30, 17, 17, 14),
    "7": (31, 1, 2, 4, 8, 8, 8), "8": (14, 17, 17, 14, 17, 17, 14), "9": (14, 17, 17, 15, 1, 2, 12),
    ".": (0, 0, 0, 0, 0, 12, 12), "-": (0, 0, 0, 14, 0, 0, 0), ":": (0, 12, 12, 0, 12, 12, 0),
    "+": (0, 4, 4, 31, 4, 4, 0), "_": (0, 0, 0, 0, 0, 0, 31), " ": (0,) * 7,
}  # fmt: skip
_UNKNOWN = (31, 17, 17, 17, 17, 17, 31)


def text_mask(text: str, scale: int = 2) -> np.ndarray:
    """Boolean (7*scale, 6*scale*len(text)) pixels of `text` (upper-cased; unknown characters as boxes)."""
    glyphs = [_FONT.get(ch, _UNKNOWN) for ch in text.upper()]
    bits = np.array([[[(row >> (4 - x)) & 1 for x in range(5)] + [0] for row in g] for g in glyphs], dtype=bool)
    mask = np.concatenate(list(bits), axis=1) if len(glyphs) else np.zeros((7, 0), bool)
    return mask.repeat(scale, 0).repeat(scale, 1)


# ---- spectrograms ----

# a perceptually ordered dark-blue -> teal -> yellow colour ramp (anchor colours, linearly interpolated)
_RAMP = np.array([[13, 8, 48], [59, 15, 112], [140, 41, 129], [222, 73, 104], [254, 159, 109], [252, 253, 191]])


def colorize(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (any shape) to uint8 RGB (..., 3) along the colour ramp."""
    position = np.clip(values, 0.0, 1.0) * (len(_RAMP) - 1)
    low = np.floor(position).astype(int).clip(0, len(_RAMP) - 2)
    frac = (position - low)[..., None]
    return (_RAMP[low] * (1 - frac) + _RAMP[low + 1] * frac).round().astype(np.uint8)


def log_spectrogram(signal: np.ndarray, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    """Magnitude in dB, (n_fft // 2 + 1, frames), of a mono float signal (samples,) with a Hann window."""
    signal = np.asarray(signal, dtype=np.float64)
    signal = np.pad(signal, (n_fft // 2, n_fft // 2 + (-len(signal)) % hop))
    frames = np.lib.stride_tricks.sliding_window_view(signal, n_fft)[::hop]
    spectrum = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1)).T
    return 20 * np.log10(spectrum + 1e-6)


def spectrogram_png(path: str | Path, panels: list[tuple[str, np.ndarray]], height: int = 256) -> Path:
    """Write stacked spectrograms of (title, mono signal) panels to `path` (atomically); returns the path.

    Every panel shares one dB scale (the loudest bin, 80 dB of range) so they compare directly.
    """
    specs = [log_spectrogram(signal) for _, signal in panels]
    top = max(spec.max() for spec in specs)
    width = max(spec.shape[1] for spec in specs)
    pieces = []
    for (title, _), spec in zip(panels, specs, strict=True):
        rows = np.linspace(0, spec.shape[0] - 1, height).round().astype(int)[::-1]  # low frequencies at the bottom
        image = colorize((spec[rows] - (top - 80.0)) / 80.0)
        image = np.pad(image, ((0, 0), (0, width - image.shape[1]), (0, 0)))
        label = text_mask(title)
        band = np.full((label.shape[0] + 8, width, 3), 255, np.uint8)
        band[4 : 4 + label.shape[0], 4 : 4 + min(label.shape[1], width - 4)][label[:, : width - 4]] = 0
        pieces += [band, image]
    path = Path(path)
    write_bytes(path, encode_png(np.concatenate(pieces, axis=0)))
    return path
