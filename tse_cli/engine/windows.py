"""How a file is cut for a model, as pure functions of lengths: streaming blocks for causal models, overlapping
windows with linear crossfades for window models, and the visual clue frames each window covers.

Lengths are samples at the model's rate; arrays are float32 (rows, samples), one row per channel of each file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tse_cli.visual import frames_before, frames_covering

WINDOW_OVERLAP = 0.25  # fraction of a window shared with the next one


def stream_blocks(total: int, block: int) -> list[int]:
    """The sizes of the blocks a causal model is fed for `total` samples: `block` each, the remainder last."""
    return [block] * (total // block) + ([total % block] if total % block else [])


@dataclass(frozen=True)
class Windows:
    """`count` windows of `window` samples, each starting `hop` samples after the previous one."""

    window: int
    hop: int
    count: int

    @property
    def overlap(self) -> int:
        """Samples each window shares with the next one (crossfaded)."""
        return self.window - self.hop

    @property
    def sizes(self) -> list[int]:
        """New input samples each window needs: a whole window first, then one hop per window."""
        return [self.window] + [self.hop] * (self.count - 1)


def plan_windows(length: int, window: int, frame: float = 1.0) -> Windows:
    """Windows covering `length` samples for a model of native window `window`.

    An input no longer than a window is one piece of its own length (no padding to the window); a longer one gets
    windows overlapping by `WINDOW_OVERLAP`, the last one reaching past the end (the caller pads with zeros).
    `frame`: samples per visual clue frame; when it is a whole number, hops are whole frames, so that every
    window starts on a frame boundary.
    """
    if length <= window:
        return Windows(length, length, 1)
    hop = window - int(window * WINDOW_OVERLAP)
    if frame.is_integer():
        hop = max(1, hop // int(frame)) * int(frame)
    return Windows(window, hop, math.ceil((length - (window - hop)) / hop))


def window_frames(start: int, length: int, sample_rate: int, clue_rate: float) -> slice:
    """The frames of a `clue_rate` fps clue that cover samples [start, start + length) at `sample_rate` Hz."""
    return slice(frames_before(start, sample_rate, clue_rate), frames_covering(start + length, sample_rate, clue_rate))


class OverlapAdd:
    """Windows of a stream of input, and their outputs summed with linear crossfades that add up to one.

    Per window: `window(fresh)` with the `plan.sizes[k]` new input samples gives the model's input (rows,
    plan.window); `add(y)` with the model's output for it gives the output samples now final (a hop, the whole
    rest for the last window).
    """

    def __init__(self, plan: Windows) -> None:
        self.plan = plan
        self.ramp = (np.arange(plan.overlap, dtype=np.float32) + 0.5) / max(plan.overlap, 1)
        self._context: np.ndarray | None = None  # the last window's last `overlap` input samples
        self._tail: np.ndarray | None = None  # its crossfaded output still to be summed with the next one
        self._added = 0

    def window(self, fresh: np.ndarray) -> np.ndarray:
        """The next window's input: the previous window's overlap followed by `fresh` (rows, n)."""
        x = fresh if self._context is None else np.concatenate([self._context, fresh], axis=1)
        self._context = x[:, self.plan.hop :]
        return x

    def add(self, y: np.ndarray) -> np.ndarray:
        """Crossfade the next window's output `y` (rows, window; changed in place) into the stream; return the
        samples that no later window touches."""
        overlap, hop = self.plan.overlap, self.plan.hop
        if self._added:
            y[:, :overlap] = y[:, :overlap] * self.ramp + self._tail
        self._added += 1
        if self._added == self.plan.count:
            return y
        self._tail = y[:, hop:] * self.ramp[::-1]
        return y[:, :hop]
