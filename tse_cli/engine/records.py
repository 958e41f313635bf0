"""What the engine is given and what it reports: a `Task` per input file, its `Result`, and `Progress` totals."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Task:
    """One input file and where its results go.

    `clue`: the (41,) multi-hot query for class models; `visual`: a (frames, 512) lip-embedding `.npy` path
    for visual models. `format` is the libsndfile major format (`WAV`/`FLAC`); `subtype` None keeps the
    input's (mapped to what the format can store).
    """

    input: Path
    output: Path
    residual: Path | None = None
    clue: np.ndarray | None = None
    visual: Path | None = None
    format: str = "WAV"
    subtype: str | None = None


@dataclass
class Result:
    """What happened to a task: `status` is `done` or `failed` (with a one-line `error`).

    `seconds`: audio duration of the input (None if it could not be read); `elapsed`: wall seconds of its batch;
    `clipped`: output samples beyond [-1, 1] in PCM outputs (clipped, never rescaled).
    """

    task: Task
    status: str
    seconds: float | None = None
    elapsed: float = 0.0
    error: str | None = None
    clipped: int = 0


@dataclass
class Progress:
    """Running totals for progress displays: files finished, audio seconds processed, wall seconds, and for
    models that report it (DPM-TSE's sampler) the steps done in the current window."""

    files_done: int
    files_total: int
    seconds_done: float
    seconds_total: float
    elapsed: float
    step: int = 0
    steps: int = 0

    @property
    def rtf(self) -> float:
        """Real-time factor: wall seconds per second of audio (below 1 is faster than real time)."""
        return self.elapsed / self.seconds_done if self.seconds_done > 0 else 0.0
