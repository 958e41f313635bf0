"""The demo's picture: stacked spectrograms with time and frequency axes and a shared dB colour scale, drawn
with Pillow and written as one PNG file.

`spectrogram_png(path, panels, sample_rate)` draws one log-magnitude spectrogram per (title, signal) pair, low
frequencies at the bottom, the title above each panel, frequency ticks in kHz on the left, time ticks in seconds
under the last panel, and one colour bar on the right in dB below the loudest bin of all panels.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tse_cli.atomic import write_bytes

N_FFT = 1024
HOP = 256
RANGE_DB = 80.0  # the colour scale spans this many dB below the loudest bin
FONT_SIZE = 12
MARGIN = {"left": 52, "right": 64, "title": 20, "gap": 8, "bottom": 34}  # pixels around the panels
TEXT, TICK, BACKGROUND = (20, 20, 20), (90, 90, 90), (255, 255, 255)

# a perceptually ordered dark-blue -> magenta -> yellow colour ramp (anchor colours, linearly interpolated)
_RAMP = np.array([[13, 8, 48], [59, 15, 112], [140, 41, 129], [222, 73, 104], [254, 159, 109], [252, 253, 191]])


def colorize(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (any shape) to uint8 RGB (..., 3) along the colour ramp."""
    position = np.clip(values, 0.0, 1.0) * (len(_RAMP) - 1)
    low = np.floor(position).astype(int).clip(0, len(_RAMP) - 2)
    frac = (position - low)[..., None]
    return (_RAMP[low] * (1 - frac) + _RAMP[low + 1] * frac).round().astype(np.uint8)


def log_spectrogram(signal: np.ndarray, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """Magnitude in dB, (n_fft // 2 + 1, frames), of a mono float signal (samples,) with a Hann window."""
    signal = np.asarray(signal, dtype=np.float64)
    signal = np.pad(signal, (n_fft // 2, n_fft // 2 + (-len(signal)) % hop))
    frames = np.lib.stride_tricks.sliding_window_view(signal, n_fft)[::hop]
    spectrum = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1)).T
    return 20 * np.log10(spectrum + 1e-6)


def _rows(spec: np.ndarray, height: int) -> np.ndarray:
    """`height` rows of a (bins, frames) spectrogram, low frequencies at the bottom: each row the loudest of the
    bins it covers, so a narrow tone shows however the bins fall."""
    edges = np.linspace(0, spec.shape[0], height + 1).astype(int)[:-1] if height <= spec.shape[0] else None
    rows = (
        np.maximum.reduceat(spec, edges, axis=0)
        if edges is not None
        else spec[np.linspace(0, spec.shape[0] - 1, height).round().astype(int)]
    )
    return rows[::-1]


def _step(span: float, pixels: int, min_pixels: int = 60) -> float:
    """A round tick step (1, 2 or 5 times a power of ten) leaving at least `min_pixels` between ticks."""
    raw = span * min_pixels / max(pixels, 1)
    base = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    return next(m * base for m in (1, 2, 5, 10) if m * base >= raw)


def _ticks(span: float, pixels: int) -> list[float]:
    step = _step(span, pixels)
    return [k * step for k in range(int(span / step + 1e-9) + 1)]


def _label(value: float, unit: str) -> str:
    return f"{value:g}{unit}"


def spectrogram_png(
    path: str | Path, panels: list[tuple[str, np.ndarray]], sample_rate: int = 44100, height: int = 256
) -> Path:
    """Write stacked spectrograms of (title, mono signal (samples,)) panels at `sample_rate` Hz to `path`
    (atomically); returns the path. Each panel is `height` pixels tall and one pixel wide per 256-sample hop.
    """
    specs = [log_spectrogram(signal) for _, signal in panels]
    top = max(spec.max() for spec in specs)
    width = max(spec.shape[1] for spec in specs)
    font = ImageFont.load_default(size=FONT_SIZE)
    panel_h = MARGIN["title"] + height + MARGIN["gap"]
    size = (MARGIN["left"] + width + MARGIN["right"], len(panels) * panel_h + MARGIN["bottom"])
    image = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    nyquist_khz = sample_rate / 2000
    x0 = MARGIN["left"]
    for k, ((title, _), spec) in enumerate(zip(panels, specs, strict=True)):
        y0 = k * panel_h + MARGIN["title"]
        picture = colorize((_rows(spec, height) - (top - RANGE_DB)) / RANGE_DB)
        image.paste(Image.fromarray(picture), (x0, y0))
        draw.text((x0, y0 - MARGIN["title"] + 3), title, fill=TEXT, font=font)
        draw.rectangle((x0 - 1, y0 - 1, x0 + width, y0 + height), outline=TICK)
        for khz in _ticks(nyquist_khz, height):
            y = y0 + height - 1 - round(khz / nyquist_khz * (height - 1))
            draw.line((x0 - 5, y, x0 - 2, y), fill=TICK)
            draw.text((x0 - 7, y), _label(khz, ""), fill=TEXT, font=font, anchor="rm")
    axis_y = len(panels) * panel_h - MARGIN["gap"]
    seconds = width * HOP / sample_rate
    for t in _ticks(seconds, width):
        x = x0 + round(t * sample_rate / HOP)
        draw.line((x, axis_y, x, axis_y + 4), fill=TICK)
        draw.text((x, axis_y + 6), _label(t, ""), fill=TEXT, font=font, anchor="mt")
    draw.text((x0 + width // 2, size[1] - 2), "time (s)", fill=TEXT, font=font, anchor="mb")
    draw.text((4, MARGIN["title"] - 16), "kHz", fill=TEXT, font=font)
    _colour_bar(image, draw, font, x0 + width + 12, MARGIN["title"], height)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    path = Path(path)
    write_bytes(path, buffer.getvalue())
    return path


def _colour_bar(image: Image.Image, draw: ImageDraw.ImageDraw, font, x: int, y: int, height: int) -> None:
    """The dB scale: 0 dB (the loudest bin) at the top, -RANGE_DB at the bottom."""
    ramp = colorize(np.linspace(1.0, 0.0, height))[:, None, :].repeat(12, axis=1)
    image.paste(Image.fromarray(ramp), (x, y))
    draw.rectangle((x - 1, y - 1, x + 12, y + height), outline=TICK)
    for db in _ticks(RANGE_DB, height):
        yy = y + round(db / RANGE_DB * (height - 1))
        draw.line((x + 12, yy, x + 15, yy), fill=TICK)
        draw.text((x + 17, yy), _label(-db, ""), fill=TEXT, font=font, anchor="lm")
    draw.text((x, y - 16), "dB", fill=TEXT, font=font)
