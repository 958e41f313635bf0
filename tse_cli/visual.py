"""Visual clues: a speaker's lip embeddings, 512 values per video frame at 25 fps, stored as `.npy` (frames, 512).

The AV models (AV-SepFormer, AV-SepMamba) read one embedding per 40 ms chunk hop of the audio, so frame f covers
audio seconds [f / 25, (f + 1) / 25). Loading aligns a clue to its audio as the published training data does:
`floor(seconds * 25)` frames, extra frames cut, missing ones filled by repeating the last frame (replicate
padding). A frame count that disagrees with the audio duration by more than a small tolerance means a wrong
frame rate or the wrong file and is refused.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from tse_cli.errors import first_line

CLUE_RATE = 25.0  # video frames per second
EMBED_DIM = 512  # values per frame
TOLERANCE_FRAMES = 3  # frame-count slack allowed between clue and audio (trimming differences) ...
TOLERANCE_FRACTION = 0.01  # ... or this fraction of the expected count, whichever is larger
VALUE_CHUNK = 4096  # frames checked for NaN/inf at a time (8 MiB as float32)


class VisualClueError(ValueError):
    """A lip-embedding file that cannot be used: the message is one line naming the file and the problem."""


def frames_before(samples: int, sample_rate: int, rate: float = CLUE_RATE) -> int:
    """Frames of a `rate` fps clue that end at or before audio sample `samples` at `sample_rate` Hz."""
    return math.floor(samples * rate / sample_rate + 1e-9)


def frames_covering(samples: int, sample_rate: int, rate: float = CLUE_RATE) -> int:
    """Frames of a `rate` fps clue that start before audio sample `samples`, i.e. cover some of the first
    `samples` samples at `sample_rate` Hz."""
    return math.ceil(samples * rate / sample_rate - 1e-9)


def clue_frames(samples: int, sample_rate: int, rate: float = CLUE_RATE) -> int:
    """Frames of a `rate` fps clue that cover `samples` audio samples at `sample_rate` Hz (at least 1)."""
    return max(1, frames_before(samples, sample_rate, rate))


def align_frames(clue: np.ndarray, frames: int) -> np.ndarray:
    """(n, dim) -> (frames, dim): cut extra frames, or repeat the last one to fill missing frames."""
    clue = clue[:frames]
    if len(clue) < frames:
        clue = np.concatenate([clue, np.repeat(clue[-1:], frames - len(clue), axis=0)])
    return clue


def check_visual_clue(
    path: str | Path, audio_samples: int | None = None, sample_rate: int | None = None, *, values: bool = False
) -> int:
    """Validate a lip-embedding `.npy` file from its header alone (cheap for whole data sets); return its frames.

    Checks what `load_visual_clue` checks except the values (NaN/inf), without reading the array; with `values`,
    the values too, reading the memory-mapped array `VALUE_CHUNK` frames at a time (constant memory).
    """
    clue = _open(Path(path), mmap=True)
    _check_rate(Path(path), len(clue), audio_samples, sample_rate)
    if values:
        _check_values(Path(path), clue)
    return len(clue)


def load_visual_clue(path: str | Path, audio_samples: int | None = None, sample_rate: int | None = None) -> np.ndarray:
    """Read and validate a lip-embedding `.npy` file; return it as float32 (frames, 512).

    With `audio_samples` and `sample_rate` (Hz) given, the frame count is checked against the audio duration
    (within max(3 frames, 1%)) and the result aligned to it: `clue_frames(audio_samples, sample_rate)` frames,
    replicate-padded or cut. Raises `VisualClueError` naming the file for a missing or unreadable file, a
    wrong shape or dtype, no frames, non-finite values, or a frame count that does not fit 25 fps.
    """
    path = Path(path)
    clue = _open(path, mmap=False).astype(np.float32)
    _check_values(path, clue)
    if audio_samples is None or sample_rate is None:
        return clue
    _check_rate(path, len(clue), audio_samples, sample_rate)
    return align_frames(clue, clue_frames(audio_samples, sample_rate))


def read_visual_clue(path: str | Path, frames: int) -> np.ndarray:
    """The first `frames` frames of a clue that `check_visual_clue` accepted, as float32 (frames, 512), the last
    frame repeated when the file has fewer; only those frames are read (memory-mapped)."""
    return align_frames(_open(Path(path), mmap=True)[:frames].astype(np.float32), frames)


def _check_values(path: Path, clue: np.ndarray) -> None:
    """Refuse NaN or infinite values (as float32, so float64 values beyond its range count), chunk by chunk."""
    for start in range(0, len(clue), VALUE_CHUNK):
        if not np.isfinite(clue[start : start + VALUE_CHUNK].astype(np.float32, copy=False)).all():
            raise VisualClueError(f"{path}: contains NaN or infinite values")


def _open(path: Path, mmap: bool) -> np.ndarray:
    """The array in `path` (memory-mapped when `mmap`), checked to be numeric (frames >= 1, 512)."""
    if not path.exists():
        raise VisualClueError(f"{path}: no such file")
    if not path.is_file():
        raise VisualClueError(f"{path}: not a file")
    try:
        clue = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise VisualClueError(f"{path}: not a readable .npy array ({first_line(err)})") from None
    if not isinstance(clue, np.ndarray):
        clue.close()
        raise VisualClueError(f"{path}: an .npz archive; expected one .npy array of shape (frames, {EMBED_DIM})")
    if clue.dtype.kind not in "fiu":
        raise VisualClueError(f"{path}: lip embeddings must be numbers, got dtype {clue.dtype}")
    if clue.ndim != 2 or clue.shape[1] != EMBED_DIM:
        hint = " (transposed? expected frames first)" if clue.ndim == 2 and clue.shape[0] == EMBED_DIM else ""
        raise VisualClueError(
            f"{path}: expected lip embeddings of shape (frames, {EMBED_DIM}), got {tuple(clue.shape)}{hint}"
        )
    if clue.shape[0] == 0:
        raise VisualClueError(f"{path}: no frames")
    return clue


def _check_rate(path: Path, frames: int, audio_samples: int | None, sample_rate: int | None) -> None:
    """Refuse a frame count more than max(3 frames, 1%) away from the audio's duration at 25 fps."""
    if audio_samples is None or sample_rate is None:
        return
    if audio_samples <= 0 or sample_rate <= 0:
        raise VisualClueError(f"{path}: its audio is empty ({audio_samples} samples at {sample_rate} Hz)")
    seconds = audio_samples / sample_rate
    expected = seconds * CLUE_RATE
    if abs(frames - expected) > max(TOLERANCE_FRAMES, TOLERANCE_FRACTION * expected):
        raise VisualClueError(
            f"{path}: {frames} frames for {seconds:.2f} s of audio ({frames / seconds:.1f} frames/s); "
            f"expected {expected:.0f} frames at {CLUE_RATE:g} fps (wrong frame rate or wrong file?)"
        )
