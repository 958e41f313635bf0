"""The record of a run: one `Task` per input, carried from plan to result, and the `Progress` totals.

A front end (`tse_cli.planning` for `tse extract`) creates a task per input and fills what to do with it; the
engine runs the tasks it is given and fills in what happened. Nothing joins records by identity: the task that
was planned is the task that is reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tse_cli.audio import AudioInfo, probe


@dataclass(frozen=True)
class Written:
    """One output file of a finished task: its `path`, `sample_rate` (Hz), the samples clipped to [-1, 1]
    (`clipped`, clip mode clamp) and the `gain` it was scaled by (clip mode rescale; 1.0 otherwise)."""

    path: Path
    sample_rate: int
    clipped: int = 0
    gain: float = 1.0


@dataclass(eq=False)
class Task:
    """One input file: where it comes from, what to do with it, and what happened to it.

    What to do: `output` (and `residual`, mixture minus estimate) paths; `clue`: the (41,) multi-hot query for
    class models (`target`: its name in output names); `visual`: a (frames, 512) lip-embedding `.npy` path for
    visual models; `format`: the output format's name (`tse_cli.audio.FORMATS`: wav, flac, ogg, ...);
    `subtype` None keeps the input's (mapped to what the format can store); `base`: the folder `input` is
    mirrored relative to under an output folder (planning only). Standard input and output: `input` `-` is read
    from `source` (standard input copied to a temporary file); with `stdout`, `output` is a temporary file that
    the command streams to standard output once the task is done. `kept`: outputs that exist and stay as they
    are (the engine writes only the others: a residual added to a finished folder).

    What happened: `status` is `todo` until decided: `skipped` or `failed` by planning, `done` or `failed` by the
    engine, with a one-line `error` when failed. `seconds`: audio duration of the input (None if it was not
    read); `elapsed`: wall seconds of its batch (None until the engine reported on it); `written`: what each
    output written got (`Written`: main output first, then the residual), once done.
    """

    input: Path
    output: Path | None = None
    residual: Path | None = None
    clue: np.ndarray | None = None
    visual: Path | None = None
    target: str = ""
    format: str = "wav"
    subtype: str | None = None
    base: Path | None = None
    source: Path | None = None
    stdout: bool = False
    kept: tuple[Path, ...] = ()
    status: str = "todo"
    error: str | None = None
    seconds: float | None = None
    elapsed: float | None = None
    written: list[Written] = field(default_factory=list)
    info: AudioInfo | None = field(default=None, repr=False)

    def header(self) -> AudioInfo:
        """The input's header (`tse_cli.audio.probe`), read on first use and kept, so that planning and the
        engine read it once between them; `AudioError` (one line) if the input is unusable."""
        if self.info is None:
            self.info = probe(self.source or self.input, label=str(self.input))
        return self.info


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
