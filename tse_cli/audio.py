"""Audio files through soundfile: probing, block reading, atomic block writing, subtypes, streaming resampling.

Every sample array here is float32 shaped (channels, frames) at the file's own rate. Nothing reads a whole file:
`BlockReader` yields fixed-size blocks, `AtomicWriter` appends blocks to a temporary file in the destination
folder and renames it into place only when the caller finishes without an error (Ctrl-C included).

Resampling (`StreamResampler`) is `torchaudio.functional.resample` (windowed-sinc, Hann, 6 zero crossings,
rolloff 0.99) applied block-wise with exact continuity: that filter is periodic with period `orig` input /
`new` output samples (rates divided by their gcd), and output group k only sees input samples
[k*orig - width, (k+1)*orig + width). The resampler keeps enough input context on both sides, resamples a
buffer starting at a group boundary and emits only the groups whose support lies inside it, so the
concatenated output equals the offline call on the whole signal up to float rounding.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf

if TYPE_CHECKING:
    from torchaudio.transforms import Resample

SUBTYPES = ("PCM_U8", "PCM_S8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE")
FORMATS = {"wav": "WAV", "flac": "FLAC"}  # user-facing name / extension -> libsndfile major format
FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")
PART_SUFFIX = ".part"  # temporary files of AtomicWriter: `.NAME.XXXXXXXX.part` beside NAME
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc", ".au", ".caf", ".w64", ".rf64"}
)
SHAPE_QUANTUM = 4096  # StreamResampler pads its buffer to a multiple of this many samples
LOWPASS_FILTER_WIDTH = 6  # torchaudio's defaults, spelled out because the streaming context depends on them
ROLLOFF = 0.99


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
    """Write blocks to `path` through a temporary file beside it; rename into place on success only.

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
        self._tmp: Path | None = None

    def __enter__(self) -> AtomicWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while self._tmp is None:  # a fresh name; created with 0o666 & ~umask like any ordinary output file
            tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}{PART_SUFFIX}")
            with contextlib.suppress(FileExistsError):
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
                self._tmp = tmp
        try:
            self._file = sf.SoundFile(
                str(self._tmp),
                "w",
                samplerate=self.sample_rate,
                channels=self.channels,
                subtype=self.subtype,
                format=self.format,
            )
        except BaseException:
            self._tmp.unlink(missing_ok=True)
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
        assert self._file is not None and self._tmp is not None
        try:
            self._file.close()
            if exc_type is None:
                os.replace(self._tmp, self.path)
        finally:
            self._tmp.unlink(missing_ok=True)
            self._file = None


@functools.lru_cache(maxsize=64)
def resample_transform(orig_rate: int, new_rate: int) -> Resample:
    """The filter of `torchaudio.functional.resample` from `orig_rate` to `new_rate` Hz, its kernel (float32,
    about 0.3 MB for 44.1 -> 16 kHz) computed once per rate pair and shared by every `StreamResampler`.

    Sharing is safe across threads: the transform holds no state but the kernel, which is only read.
    """
    import torch
    from torchaudio.transforms import Resample

    return Resample(
        orig_rate, new_rate, lowpass_filter_width=LOWPASS_FILTER_WIDTH, rolloff=ROLLOFF, dtype=torch.float32
    )


class StreamResampler:
    """Block-wise `torchaudio.functional.resample` from `orig_rate` to `new_rate` Hz with exact continuity.

    `feed(x (channels, n))` returns the output samples that are final so far, `flush()` the rest; their
    concatenation has `ceil(total * new / orig)` samples and equals the offline call (see the module docstring).
    Memory is bounded by one block plus `width + orig` samples of context; the kernel is shared
    (`resample_transform`).
    """

    def __init__(self, orig_rate: int, new_rate: int, channels: int) -> None:
        gcd = math.gcd(int(orig_rate), int(new_rate))
        self.orig, self.new = orig_rate // gcd, new_rate // gcd
        self._resampler = resample_transform(int(orig_rate), int(new_rate))
        self.width = self._resampler.width  # input taps either side of a group
        self._buf = np.zeros((channels, 0), dtype=np.float32)
        self._buf_start = 0  # absolute input index of _buf[:, 0], always a multiple of orig
        self._seen = 0  # input samples fed so far
        self._groups_done = 0  # output groups (of `new` samples) emitted so far

    def _emit(self, groups_end: int, samples_end: int | None) -> np.ndarray:
        """Resample the buffer and return output groups [_groups_done, groups_end), cut at `samples_end`."""
        import torch

        first_group = self._buf_start // self.orig
        # zero-pad to a multiple of SHAPE_QUANTUM: emitted groups never see the padding (their support ends in the
        # buffer, or the signal ends there and offline pads with zeros too), and the convolution then meets few
        # distinct shapes, so the CPU backend's per-shape caches stay small over hours of audio
        padded = np.pad(self._buf, ((0, 0), (0, -self._buf.shape[1] % SHAPE_QUANTUM)))
        with torch.inference_mode():
            full = self._resampler(torch.from_numpy(padded)).numpy()
        start = (self._groups_done - first_group) * self.new
        stop = (groups_end - first_group) * self.new
        if samples_end is not None:
            stop = min(stop, samples_end - first_group * self.new)
        out = full[:, start:stop]
        self._groups_done = groups_end
        keep_from = max(0, (groups_end * self.orig - self.width) // self.orig * self.orig)
        self._buf = self._buf[:, keep_from - self._buf_start :]
        self._buf_start = keep_from
        return out

    def feed(self, x: np.ndarray) -> np.ndarray:
        """Add input (channels, n); return the newly final output (channels, m)."""
        self._buf = np.concatenate([self._buf, x.astype(np.float32, copy=False)], axis=1)
        self._seen += x.shape[1]
        # group k is final once input up to (k+1)*orig + width has arrived
        groups_end = max(0, (self._seen - self.width) // self.orig)
        if groups_end <= self._groups_done:
            return np.zeros((x.shape[0], 0), dtype=np.float32)
        return self._emit(groups_end, None)

    def flush(self) -> np.ndarray:
        """The remaining output: the signal ends here (zero padding beyond it, as offline)."""
        total = math.ceil(self.new * self._seen / self.orig)
        groups_end = math.ceil(total / self.new)
        if groups_end <= self._groups_done or self._buf.shape[1] == 0:
            return np.zeros((self._buf.shape[0], 0), dtype=np.float32)
        return self._emit(groups_end, total)


def resampled_length(frames: int, orig_rate: int, new_rate: int) -> int:
    """Number of samples `frames` input samples become after resampling (torchaudio's ceil rule)."""
    gcd = math.gcd(orig_rate, new_rate)
    return math.ceil((new_rate // gcd) * frames / (orig_rate // gcd))
