"""PCM audio as a byte stream: sample formats, the WAV header of a stream, reading stdin as it arrives, writing stdout.

`tse stream` reads audio from a pipe and writes to one, so nothing here may seek or wait for the end of the
input. A WAV stream is parsed chunk by chunk from its first bytes (`read_wav_header`): RIFF or RF64, `fmt `
(PCM 8/16/24/32-bit, IEEE float 32/64, also as WAVE_FORMAT_EXTENSIBLE), unknown chunks skipped, then `data`.
Streaming writers do not know the length: ffmpeg writes 0xFFFFFFFF as the data size into a pipe, others 0 or
a large placeholder, so a size of 0 or 0xFFFFFFFF means "until the end of the input", and any other size is an
upper bound (the input may end earlier: a capture stopped with Ctrl-C).

Samples convert as libsndfile converts them for `tse extract`'s files, so a stream and a file with the same
samples decode to the same floats and the same floats encode to the same bytes: decoding is libsndfile's exact
power-of-two scaling done with numpy (tests compare every format with libsndfile), encoding goes through a
libsndfile writer of the RAW format kept open on an in-memory sink. Arrays are float32 (channels, frames).

`ByteSource` reads a file descriptor with `select`, so that SIGINT (Ctrl-C) stops a read that is waiting for
input without losing the bytes already read (POSIX only); `ByteSink` writes each block at once, unbuffered.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf

# user-facing sample formats (little-endian) -> (libsndfile subtype, bytes per sample, WAV format tag)
DTYPES: dict[str, tuple[str, int, int]] = {
    "uint8": ("PCM_U8", 1, 1),
    "int16": ("PCM_16", 2, 1),
    "int24": ("PCM_24", 3, 1),
    "int32": ("PCM_32", 4, 1),
    "float32": ("FLOAT", 4, 3),
    "float64": ("DOUBLE", 8, 3),
}
WAVE_FORMAT_PCM, WAVE_FORMAT_IEEE_FLOAT, WAVE_FORMAT_EXTENSIBLE = 1, 3, 0xFFFE
UNKNOWN_SIZE = 0xFFFFFFFF  # what streaming writers put in the size fields
MAX_HEADER_CHUNK = 1 << 20  # bytes of a non-audio chunk before `data` that we accept to skip


class StreamError(ValueError):
    """Input that cannot be used as audio: the message is one line naming the stream and the problem."""


@dataclass(frozen=True)
class PcmFormat:
    """Interleaved little-endian PCM: `sample_rate` (Hz), `channels`, `dtype` (a key of `DTYPES`)."""

    sample_rate: int
    channels: int
    dtype: str

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise StreamError(f"unsupported sample format {self.dtype!r}; choose one of {', '.join(DTYPES)}")
        if self.sample_rate <= 0 or self.channels <= 0:
            raise StreamError(f"invalid stream format ({self.sample_rate} Hz, {self.channels} channels)")

    @property
    def subtype(self) -> str:
        """The libsndfile subtype (`PCM_16`, `FLOAT`, ...)."""
        return DTYPES[self.dtype][0]

    @property
    def frame_bytes(self) -> int:
        """Bytes per frame (one sample of every channel)."""
        return DTYPES[self.dtype][1] * self.channels

    @property
    def is_pcm(self) -> bool:
        """Whether samples are integers (values beyond [-1, 1] clip when encoded)."""
        return DTYPES[self.dtype][2] == WAVE_FORMAT_PCM

    def decode(self, data: bytes) -> np.ndarray:
        """Whole frames of bytes -> float32 (channels, frames), exactly as libsndfile reads a file of this format
        (integers scaled by a power of two: 2^-7 after removing uint8's offset of 128, 2^-15, 2^-23, 2^-31)."""
        if self.dtype == "int24":
            b = np.frombuffer(data, np.uint8).reshape(-1, 3).astype(np.int32)
            samples = ((b[:, 2] << 24) | (b[:, 1] << 16) | (b[:, 0] << 8)).astype(np.float32) * np.float32(2.0**-31)
        else:
            kind = {"uint8": "u1", "int16": "<i2", "int32": "<i4", "float32": "<f4", "float64": "<f8"}[self.dtype]
            samples = np.frombuffer(data, kind).astype(np.float32)
            if self.dtype == "uint8":
                samples = (samples - np.float32(128)) * np.float32(2.0**-7)
            elif self.is_pcm:
                samples *= np.float32(2.0 ** (1 - 8 * DTYPES[self.dtype][1]))
        return np.ascontiguousarray(samples.reshape(-1, self.channels).T)


class _Collector:
    """A write-only file object for libsndfile: keeps what is written until `take`."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.position = 0

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.position += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:  # libsndfile asks for the length once, when opening
        return self.position

    def tell(self) -> int:
        return self.position

    def read(self, size: int = -1) -> bytes:
        return b""

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


class Encoder:
    """float (channels, frames) blocks -> bytes in `fmt`, by one libsndfile writer kept open (the conversion
    `tse extract`'s files get). Integer formats clip to [-1, 1] first (never rescale), as
    `tse_cli.audio.AtomicWriter` does."""

    def __init__(self, fmt: PcmFormat) -> None:
        self.format = fmt
        self._sink = _Collector()
        self._file = sf.SoundFile(
            self._sink, "w", samplerate=fmt.sample_rate, channels=fmt.channels, subtype=fmt.subtype, format="RAW"
        )

    def encode(self, x: np.ndarray) -> tuple[bytes, int]:
        """A block (channels, frames) -> (its bytes, samples clipped)."""
        clipped = 0
        if self.format.is_pcm:
            over = np.abs(x) > 1.0
            if over.any():
                clipped = int(over.sum())
                x = np.clip(x, -1.0, 1.0)
        if x.shape[1]:
            self._file.write(np.ascontiguousarray(x.T, dtype=np.float32))
        return self._sink.take(), clipped

    def close(self) -> None:
        """Close the writer (nothing is buffered in it)."""
        self._file.close()


# WAV headers -----------------------------------------------------------------------------------------------------


def _dtype_of(tag: int, bits: int, name: str) -> str:
    for dtype, (_, size, dtype_tag) in DTYPES.items():
        if dtype_tag == tag and size * 8 == bits:
            return dtype
    kind = {WAVE_FORMAT_PCM: "integer PCM", WAVE_FORMAT_IEEE_FLOAT: "float"}.get(tag, f"format tag {tag:#06x}")
    raise StreamError(
        f"{name}: unsupported WAV sample format ({kind}, {bits} bits); use 8/16/24/32-bit PCM or 32/64-bit float"
    )


def _parse_fmt(body: bytes, name: str) -> tuple[int, int, str]:
    """A `fmt ` chunk -> (rate, channels, dtype)."""
    if len(body) < 16:
        raise StreamError(f"{name}: WAV fmt chunk too short ({len(body)} bytes)")
    tag, channels, rate, _, block_align, bits = struct.unpack("<HHIIHH", body[:16])
    if tag == WAVE_FORMAT_EXTENSIBLE:
        if len(body) < 40:
            raise StreamError(f"{name}: WAVE_FORMAT_EXTENSIBLE fmt chunk too short ({len(body)} bytes)")
        tag = struct.unpack("<H", body[24:26])[0]  # the sub-format GUID starts with the plain format tag
    dtype = _dtype_of(tag, bits, name)
    if channels == 0 or rate == 0 or block_align != channels * DTYPES[dtype][1]:
        raise StreamError(f"{name}: invalid WAV fmt chunk ({rate} Hz, {channels} channels, block {block_align})")
    return rate, channels, dtype


def read_wav_header(read: Callable[[int], bytes], name: str = "stdin") -> tuple[PcmFormat, int | None]:
    """Parse a WAV stream up to its audio: `read(n)` returns the next n bytes (fewer only at the end).

    Returns the format and the data size in bytes, None when the writer left it unknown (0 or 0xFFFFFFFF).
    Raises `StreamError` for anything that is not a WAV stream tse can read.
    """
    head = read(12)
    if not head:
        raise StreamError(f"{name}: no input (empty stream)")
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
        raise StreamError(f"{name}: not a WAV stream (starts with {head[:12]!r}); for raw PCM give --raw --rate HZ")
    fmt: tuple[int, int, str] | None = None
    while True:
        chunk = read(8)
        if len(chunk) < 8:
            raise StreamError(f"{name}: WAV stream ends before its audio data")
        cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if cid == b"data":
            if fmt is None:
                raise StreamError(f"{name}: WAV data chunk before the fmt chunk")
            return PcmFormat(*fmt), None if size in (0, UNKNOWN_SIZE) else size
        if size > MAX_HEADER_CHUNK:
            raise StreamError(f"{name}: WAV chunk {cid!r} of {size} bytes before the audio data")
        body = read(size + size % 2)  # chunks are padded to an even size
        if len(body) < size:
            raise StreamError(f"{name}: WAV stream ends inside its {cid!r} chunk")
        if cid == b"fmt ":
            fmt = _parse_fmt(body, name)


def wav_header(fmt: PcmFormat, data_bytes: int | None = None) -> bytes:
    """A 44-byte WAV header; `data_bytes` None writes 0xFFFFFFFF sizes (length unknown, as ffmpeg streams)."""
    _, size, tag = DTYPES[fmt.dtype]
    riff = UNKNOWN_SIZE if data_bytes is None else min(36 + data_bytes, UNKNOWN_SIZE)
    data = UNKNOWN_SIZE if data_bytes is None else min(data_bytes, UNKNOWN_SIZE)
    body = struct.pack(
        "<HHIIHH", tag, fmt.channels, fmt.sample_rate, fmt.sample_rate * fmt.frame_bytes, fmt.frame_bytes, size * 8
    )
    return (
        b"RIFF"
        + struct.pack("<I", riff)
        + b"WAVEfmt "
        + struct.pack("<I", len(body))
        + body
        + b"data"
        + (struct.pack("<I", data))
    )


# reading and writing file descriptors ------------------------------------------------------------------------------


class ByteSource:
    """Bytes from file descriptor `fd` as they arrive (`read`), stopped by Ctrl-C inside `catch_sigint()`.

    There SIGINT sets `interrupted` and wakes the `select` a read is waiting in (through
    `signal.set_wakeup_fd`) instead of raising KeyboardInterrupt somewhere in the middle of a block: the read
    returns what it has, and the caller ends the stream cleanly.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.interrupted = False
        self.eof = False
        self.bytes_read = 0
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)

    def read(self, n: int) -> bytes:
        """Exactly `n` bytes, fewer only at the end of the input or once interrupted."""
        parts, have = [], 0
        while have < n and not (self.eof or self.interrupted):
            ready, _, _ = select.select([self.fd, self._wake_r], [], [])
            if self._wake_r in ready:
                os.read(self._wake_r, 4096)
                continue  # the handler has run (signals are handled before select returns): loop re-checks
            data = os.read(self.fd, min(n - have, 1 << 20))
            if not data:
                self.eof = True
            parts.append(data)
            have += len(data)
        self.bytes_read += have
        return b"".join(parts)

    def catch_sigint(self) -> _SigintCatcher:
        """A context manager: inside, Ctrl-C interrupts reads (sets `interrupted`) and nothing else."""
        return _SigintCatcher(self)

    def close(self) -> None:
        """Close the wake-up pipe (not `fd`)."""
        os.close(self._wake_r)
        os.close(self._wake_w)


class _SigintCatcher:
    def __init__(self, source: ByteSource) -> None:
        self.source = source

    def __enter__(self) -> None:
        def handler(signum: int, frame: Any) -> None:
            self.source.interrupted = True

        self.previous = signal.signal(signal.SIGINT, handler)
        self.previous_fd = signal.set_wakeup_fd(self.source._wake_w)

    def __exit__(self, *exc: object) -> None:
        signal.set_wakeup_fd(self.previous_fd)
        signal.signal(signal.SIGINT, self.previous)


class ByteSink:
    """Writes to file descriptor `fd` at once (no buffering); `BrokenPipeError` when the reader has gone.

    `start`: the file offset of the first byte written when `fd` is a regular file opened without O_APPEND
    (`> out.wav`), where `rewrite` can complete a header at the end; None otherwise (a pipe, a terminal).
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.bytes_written = 0
        regular = stat.S_ISREG(os.fstat(fd).st_mode) and not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND
        self.start = os.lseek(fd, 0, os.SEEK_CUR) if regular else None

    def write(self, data: bytes) -> None:
        """Write all of `data` now."""
        view = memoryview(data)
        while view:
            done = os.write(self.fd, view)
            view = view[done:]
        self.bytes_written += len(data)

    def rewrite(self, data: bytes) -> bool:
        """Overwrite the first bytes written with `data` (a regular file only); return whether it could."""
        if self.start is None:
            return False
        os.pwrite(self.fd, data, self.start)
        return True
