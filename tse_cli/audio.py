"""Audio files through soundfile: probing, block reading, atomic block writing, subtypes.

Every sample array here is float32 shaped (channels, frames) at the file's own rate. Nothing reads a whole file:
`BlockReader` yields fixed-size blocks, `AtomicWriter` appends blocks to a temporary file in the destination
folder and renames it into place only when the caller finishes without an error (Ctrl-C included).
Resampling lives in `tse_cli.resample` (`StreamResampler` is re-exported here, its former home).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from tse_cli.atomic import atomic_file
from tse_cli.resample import StreamResampler, resample_transform, resampled_length  # noqa: F401 (their old home)

SUBTYPES = ("PCM_U8", "PCM_S8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE")
FORMATS = {"wav": "WAV", "flac": "FLAC"}  # user-facing name / extension -> libsndfile major format
FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc", ".au", ".caf", ".w64", ".rf64"}
)


class AudioError(ValueError):
    """A file that cannot be used: the message is one line naming the file and the problem."""


@dataclass(frozen=True)
class AudioInfo:
    """What `probe` learns from a file's header: rate (Hz), channels, frames per channel, subtype, format."""

    path: Path
    sample_rate: int
    channels: int
    frames: int
    subtype: str
    format: str

    @property
    def seconds(self) -> float:
        """Duration in seconds."""
        return self.frames / self.sample_rate


def probe(path: str | Path) -> AudioInfo:
    """Read the header of `path`; raise `AudioError` if it is missing, not audio, unreadable or empty."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if not path.is_file():
        raise AudioError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    try:
        info = sf.info(str(path))
    except sf.SoundFileError as err:
        raise AudioError(f"{path}: not a readable audio file ({_reason(err)})") from None
    if info.frames <= 0:
        raise AudioError(f"{path}: no audio (0 frames)")
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioError(f"{path}: invalid header ({info.samplerate} Hz, {info.channels} channels)")
    return AudioInfo(path, int(info.samplerate), int(info.channels), int(info.frames), info.subtype, info.format)


def _reason(err: Exception) -> str:
    """The last line of a soundfile error, without the repeated file name."""
    text = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    return text.split(": ", 1)[-1] if text.startswith("Error opening") else text


class BlockReader:
    """Iterate a file as float32 blocks of shape (channels, <= block_frames), checking every sample is finite.

    Raises `AudioError` (naming the file and the sample position) for NaN/inf samples, decode errors, or a
    file that ends before the frame count its header promised.
    """

    def __init__(self, info: AudioInfo, block_frames: int) -> None:
        if block_frames <= 0:
            raise ValueError("block_frames must be positive")
        self.info = info
        self.block_frames = block_frames

    def __iter__(self) -> Iterator[np.ndarray]:
        path, position = self.info.path, 0
        try:
            with sf.SoundFile(str(path)) as f:
                while position < self.info.frames:
                    block = f.read(min(self.block_frames, self.info.frames - position), dtype="float32", always_2d=True)
                    if len(block) == 0:
                        raise AudioError(f"{path}: file ends at frame {position} of {self.info.frames} (truncated?)")
                    bad = ~np.isfinite(block)
                    if bad.any():
                        frame = position + int(np.argmax(bad.any(axis=1)))
                        raise AudioError(f"{path}: non-finite sample (NaN or inf) at frame {frame}")
                    position += len(block)
                    yield np.ascontiguousarray(block.T)
        except sf.SoundFileError as err:
            raise AudioError(f"{path}: cannot decode at frame {position} ({_reason(err)})") from None


def output_format(name: str) -> str:
    """The libsndfile format for a user-facing format name (`wav`, `flac`)."""
    try:
        return FORMATS[name.lower()]
    except KeyError:
        raise AudioError(f"unsupported output format {name!r}; choose one of {', '.join(FORMATS)}") from None


def subtype_name(subtype: str) -> str:
    """A requested subtype (any case), upper-case; raise `AudioError` if it is none of `SUBTYPES`."""
    if subtype.upper() not in SUBTYPES:
        raise AudioError(f"unsupported subtype {subtype!r}; choose one of {', '.join(SUBTYPES)}")
    return subtype.upper()


def check_subtype(subtype: str, fmt: str) -> str:
    """Validate an explicitly requested subtype for libsndfile format `fmt` (`WAV`/`FLAC`); return it upper-case."""
    subtype = subtype_name(subtype)
    if not sf.check_format(fmt, subtype):
        allowed = ", ".join(s for s in SUBTYPES if sf.check_format(fmt, s))
        raise AudioError(f"{fmt} cannot store {subtype} samples; use one of {allowed}")
    return subtype


def default_subtype(input_subtype: str, fmt: str) -> str:
    """The output subtype matching an input's as closely as `fmt` allows.

    WAV has no signed 8-bit (-> PCM_U8); FLAC has neither unsigned 8-bit (-> PCM_S8) nor 32-bit/float samples
    (-> PCM_24, its widest). Compressed inputs (MP3, Vorbis, ...) become FLOAT in WAV and PCM_24 in FLAC.
    """
    if sf.check_format(fmt, input_subtype) and input_subtype in SUBTYPES:
        return input_subtype
    mapping = {"PCM_S8": "PCM_U8", "PCM_U8": "PCM_S8"}
    if input_subtype in mapping and sf.check_format(fmt, mapping[input_subtype]):
        return mapping[input_subtype]
    return "FLOAT" if sf.check_format(fmt, "FLOAT") else "PCM_24"


def is_pcm(subtype: str) -> bool:
    """Whether a subtype stores integers (values beyond [-1, 1] clip)."""
    return subtype not in FLOAT_SUBTYPES


class AtomicWriter:
    """Write blocks to `path` through a temporary file beside it (`tse_cli.atomic`); rename into place on success.

    Use as a context manager: leaving the block normally closes the temporary file and `os.replace`s it onto
    `path`; leaving it with any exception (KeyboardInterrupt too) deletes it, so `path` is either untouched or
    complete. For PCM subtypes samples are clipped to [-1, 1] (never rescaled) and `clipped` counts them.
    """

    def __init__(self, path: str | Path, sample_rate: int, channels: int, subtype: str, fmt: str) -> None:
        self.path = Path(path)
        self.sample_rate, self.channels, self.subtype, self.format = sample_rate, channels, subtype, fmt
        self.clipped = 0
        self.frames = 0
        self._file: sf.SoundFile | None = None
        self._target: contextlib.AbstractContextManager[Path] | None = None
        self._tmp: Path | None = None

    def __enter__(self) -> AtomicWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._target = atomic_file(self.path)
        self._tmp = self._target.__enter__()
        try:
            self._file = sf.SoundFile(
                str(self._tmp),
                "w",
                samplerate=self.sample_rate,
                channels=self.channels,
                subtype=self.subtype,
                format=self.format,
            )
        except BaseException as err:
            self._target.__exit__(type(err), err, err.__traceback__)
            raise
        return self

    def write(self, block: np.ndarray) -> None:
        """Append a (channels, frames) float block."""
        if self._file is None:
            raise RuntimeError("AtomicWriter.write outside its with-block")
        if block.shape[0] != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {block.shape[0]}")
        if is_pcm(self.subtype):
            over = np.abs(block) > 1.0
            if over.any():
                self.clipped += int(over.sum())
                block = np.clip(block, -1.0, 1.0)
        self._file.write(np.ascontiguousarray(block.T))
        self.frames += block.shape[1]

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._file is not None and self._target is not None
        try:
            self._file.close()
        except BaseException as err:
            self._target.__exit__(type(err), err, err.__traceback__)
            raise
        finally:
            self._file = None
        self._target.__exit__(exc_type, exc, tb)
