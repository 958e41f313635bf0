"""Audio files through soundfile: probing, block reading, atomic block writing, output formats, pipes.

Every sample array here is float32 shaped (channels, frames) at the file's own rate. Nothing reads a whole file:
`BlockReader` yields fixed-size blocks, `AtomicWriter` appends blocks to a temporary file in the destination
folder and renames it into place only when the caller finishes without an error (Ctrl-C included), clamping or
rescaling samples beyond [-1, 1] as its clip mode says. `FORMATS` are the output formats this libsndfile writes
(`OutputFormat`: container, codec, the rates it stores). Standard input and output are files too: `spool_stdin`
copies a piped input to a temporary file, `send_to_stdout` streams a finished output.
Resampling lives in `tse_cli.resample` (`StreamResampler` is re-exported here, its former home).

What is refused, each with a one-line `AudioError` naming the file: paths that are not regular files (folders,
FIFOs, sockets, devices, broken links), unreadable, empty or 0-frame files, files whose header promises more audio
than the file holds (`truncation`), and samples that are NaN/inf or beyond +-`MAX_SAMPLE` (`check_samples`).

(About 510 lines: probing, reading and writing share the refusal rules and the one-line reasons above, and
`AtomicWriter`'s clip modes and error mapping are most of it; the output-format table is the part to move out if
it grows.)
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from tse_cli.atomic import atomic_file, create_temp
from tse_cli.resample import StreamResampler, resample_transform, resampled_length  # noqa: F401 (their old home)
from tse_cli.signals import stdout_closed

SUBTYPES = ("PCM_U8", "PCM_S8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE")
FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc", ".au", ".caf", ".w64", ".rf64"}
)
# Samples beyond this are refused (inputs) or fail the file (model outputs): 90 dB above full scale, beyond any
# recording (float files stored at integer scale peak at 32767) and far inside what float32 models can square.
MAX_SAMPLE = 2.0**15
CLIP_MODES = ("clamp", "rescale", "none")
STDIO = "-"  # the name of standard input (as an input) and standard output (as -o)


@dataclass(frozen=True)
class OutputFormat:
    """A format tse writes: `name` (what --format takes, and the file extension), libsndfile's `major` format,
    the `codec` of a lossy format (its only subtype; None where the subtype is chosen among `SUBTYPES`), other
    file `suffixes` it goes by, and `rates`: the only sample rates it stores (Opus), empty for any rate."""

    name: str
    major: str
    codec: str | None = None
    suffixes: tuple[str, ...] = ()
    rates: tuple[int, ...] = ()

    def subtype(self, requested: str | None, input_subtype: str | None) -> str | None:
        """The subtype to write: the codec of a lossy format, else `requested` (checked) or, with none, the
        input's as close as this format allows (`default_subtype`), None while the input is not known yet."""
        if self.codec is not None:
            if requested is not None and requested.upper() != self.codec:
                raise AudioError(f"{self.name} is lossy ({self.codec}); --subtype is for PCM formats such as wav")
            return self.codec
        if requested is not None:
            return check_subtype(requested, self.major)
        return default_subtype(input_subtype, self.major) if input_subtype is not None else None

    def storable_rate(self, rate: int) -> int:
        """`rate` if this format stores it, else the lowest rate it stores above it (its highest, for more)."""
        if not self.rates or rate in self.rates:
            return rate
        return min((r for r in self.rates if r > rate), default=max(self.rates))


_KNOWN_FORMATS = (
    OutputFormat("wav", "WAV"),
    OutputFormat("flac", "FLAC"),
    OutputFormat("ogg", "OGG", "VORBIS", ("oga",)),
    OutputFormat("opus", "OGG", "OPUS", rates=(8000, 12000, 16000, 24000, 48000)),
    OutputFormat("mp3", "MP3", "MPEG_LAYER_III"),
    OutputFormat("aiff", "AIFF", suffixes=("aif",)),
    OutputFormat("au", "AU"),
    OutputFormat("caf", "CAF"),
    OutputFormat("w64", "W64"),
    OutputFormat("rf64", "RF64"),
)


def _writable(fmt: OutputFormat) -> bool:
    majors = sf.available_formats()
    return fmt.major in majors and (fmt.codec is None or fmt.codec in sf.available_subtypes(fmt.major))


FORMATS: dict[str, OutputFormat] = {f.name: f for f in _KNOWN_FORMATS if _writable(f)}
"""The output formats of this libsndfile, by name (`soundfile.available_formats()` and their codecs)."""


class AudioError(ValueError):
    """A file that cannot be used: the message is one line naming the file and the problem."""


@dataclass(frozen=True)
class AudioInfo:
    """What `probe` learns from a file's header: rate (Hz), channels, frames per channel, subtype, format;
    `label`: what messages call the file (`-` for standard input read from a temporary copy at `path`)."""

    path: Path
    sample_rate: int
    channels: int
    frames: int
    subtype: str
    format: str
    label: str | None = None

    @property
    def name(self) -> str:
        """The file as messages name it."""
        return self.label if self.label is not None else str(self.path)

    @property
    def seconds(self) -> float:
        """Duration in seconds."""
        return self.frames / self.sample_rate


_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def special_kind(path: Path) -> str | None:
    """What an existing `path` is when it is not a regular file (after links): "a folder", "a named pipe (FIFO)",
    "a socket", "a character device", "a block device"; None for a regular file or a path that does not exist."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    return next((kind for test, kind in _KINDS if test(mode)), None)


def not_a_file(path: Path) -> str | None:
    """Why `path` cannot be opened as an audio file, from what the file system says of it alone (None for a
    readable regular file, or a link to one). Never opens it, so a FIFO cannot block."""
    try:
        path.stat()
    except FileNotFoundError:
        return f"broken symbolic link (to {os.readlink(path)})" if path.is_symlink() else "no such file"
    except OSError as err:
        return f"cannot read ({err.strerror or err})"
    kind = special_kind(path)
    if kind:
        return f"is {kind}, not an audio file"
    if not os.access(path, os.R_OK):
        return "cannot read (permission denied)"
    return None


# libsndfile's header log says "<chunk> : <declared> (should be <present>)" when the file is shorter than its
# header says (WAV/AIFF/AU data chunks, W64's riff chunk), and these lines for other containers' truncation.
_SHORT_CHUNK = re.compile(r"^\s*(?:data|SSND|Data Size|riff)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_TRUNCATED = (
    "> file length",  # AIFF and others: a chunk runs past the end of the file
    "does not match value from 'ds64'",  # RF64
    "not equal to frame count",  # AIFF: fewer frames than COMM declares
    "lacks an end-of-stream bit",  # Ogg (Vorbis, Opus): the last complete page is not the stream's last
)
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # written by streaming writers that could not seek back: no length declared


def truncation(header_log: str) -> str | None:
    """Why a file is shorter than its header declares, from libsndfile's header log (`soundfile.info(...)
    .extra_info`), or None. Formats whose header declares no length (MP3, a streamed WAV) cannot be checked here;
    `BlockReader` still fails a file that ends before its frame count."""
    for match in _SHORT_CHUNK.finditer(header_log):
        declared, present = int(match.group(1)), int(match.group(2))
        if declared not in _UNKNOWN_SIZES and present < declared:
            return f"truncated: its header declares {declared} bytes of audio, the file holds {present}"
    for marker in _TRUNCATED:
        if marker in header_log:
            line = next(line for line in header_log.splitlines() if marker in line)
            return f"truncated: {line.strip(' *').rstrip('.')}"
    return None


def probe(path: str | Path, label: str | None = None) -> AudioInfo:
    """Read the header of `path`; raise `AudioError` if it is not a readable regular file, not audio, empty or
    truncated (see `not_a_file` and `truncation`). Messages name the file `label` when given (`-` for a copy of
    standard input)."""
    path = Path(path)
    if label is not None and label != str(path):
        try:
            return _with_label(probe(path), label)
        except AudioError as err:
            raise AudioError(str(err).replace(str(path), label, 1)) from None
    problem = not_a_file(path)
    if problem:
        raise AudioError(f"{path}: {problem}")
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
    problem = truncation(info.extra_info)
    if problem:
        raise AudioError(f"{path}: {problem}")
    return AudioInfo(path, int(info.samplerate), int(info.channels), int(info.frames), info.subtype, info.format)


def check_samples(block: np.ndarray, start: int) -> str | None:
    """Why a float block (channels, frames) whose first frame is frame `start` of its file cannot be used: a NaN
    or inf sample, or one beyond +-`MAX_SAMPLE`, with the first such frame; None when every sample is fine."""
    peak = float(np.max(np.abs(block))) if block.size else 0.0  # NaN propagates through max
    if peak <= MAX_SAMPLE:
        return None
    finite = np.isfinite(peak)
    bad = np.abs(block) > MAX_SAMPLE if finite else ~np.isfinite(block)
    index = int(np.argmax(bad.any(axis=0)))
    if finite:
        value = float(np.max(np.abs(block[:, index])))
        return (
            f"sample of magnitude {value:.3g} at frame {start + index} (beyond +-{MAX_SAMPLE:g}; audio is within +-1)"
        )
    frame = start + index
    return f"non-finite sample (NaN or inf) at frame {frame}"


def _with_label(info: AudioInfo, label: str) -> AudioInfo:
    return AudioInfo(info.path, info.sample_rate, info.channels, info.frames, info.subtype, info.format, label)


def _reason(err: Exception) -> str:
    """The last line of a soundfile error, without the repeated file name."""
    text = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    return text.split(": ", 1)[-1] if text.startswith("Error opening") else text


class BlockReader:
    """Iterate a file as float32 blocks of shape (channels, <= block_frames), checking every sample is finite.

    Raises `AudioError` (naming the file and the sample position) for NaN/inf samples or samples beyond
    +-`MAX_SAMPLE` (`check_samples`), decode errors, or a file that ends before the frame count its header promised.
    """

    def __init__(self, info: AudioInfo, block_frames: int) -> None:
        if block_frames <= 0:
            raise ValueError("block_frames must be positive")
        self.info = info
        self.block_frames = block_frames

    def __iter__(self) -> Iterator[np.ndarray]:
        path, position = self.info.name, 0
        try:
            with sf.SoundFile(str(self.info.path)) as f:
                while position < self.info.frames:
                    block = f.read(min(self.block_frames, self.info.frames - position), dtype="float32", always_2d=True)
                    if len(block) == 0:
                        raise AudioError(f"{path}: file ends at frame {position} of {self.info.frames} (truncated?)")
                    block = np.ascontiguousarray(block.T)
                    problem = check_samples(block, position)
                    if problem:
                        raise AudioError(f"{path}: {problem}")
                    position += block.shape[1]
                    yield block
        except sf.SoundFileError as err:
            raise AudioError(f"{path}: cannot decode at frame {position} ({_reason(err)})") from None


def output_format(name: str) -> OutputFormat:
    """The output format called `name` (any case, `FORMATS`); `AudioError` naming the choices otherwise."""
    try:
        return FORMATS[name.lower()]
    except KeyError:
        raise AudioError(f"unsupported output format {name!r}; choose one of {', '.join(FORMATS)}") from None


def format_of_suffix(path: Path) -> OutputFormat | None:
    """The output format a file name's suffix names (`.wav`, `.opus`, `.aif`, ...), None for any other."""
    suffix = path.suffix.lower().lstrip(".")
    return next((f for f in FORMATS.values() if suffix == f.name or suffix in f.suffixes), None)


def format_of_major(major: str, subtype: str) -> OutputFormat | None:
    """The output format of an input whose header says libsndfile format `major` with `subtype` (an Ogg file is
    `ogg` or `opus` by its codec), None when tse does not write it."""
    return next((f for f in FORMATS.values() if f.major == major and f.codec in (None, subtype)), None)


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


def clips(subtype: str) -> bool:
    """Whether a subtype cannot keep samples beyond [-1, 1]: integers (PCM) and the lossy codecs (decoders
    clip them); FLOAT and DOUBLE keep any value."""
    return subtype not in FLOAT_SUBTYPES


class AtomicWriter:
    """Write blocks to `path` through a temporary file beside it (`tse_cli.atomic`); rename into place on success.

    Use as a context manager: leaving the block normally closes the temporary file and `os.replace`s it onto
    `path`; leaving it with any exception (KeyboardInterrupt too) deletes it, so `path` is either untouched or
    complete. `fmt` is libsndfile's major format. Samples beyond [-1, 1] follow `clip` (`CLIP_MODES`):

    - `clamp`: clipped to [-1, 1] where the subtype cannot keep them (`clips`), never rescaled; `clipped` counts them;
    - `rescale`: if the file's peak is above 1, the whole file is scaled by 1 / peak (`gain`), in every subtype;
      the samples wait in a float32 temporary beside `path` until the peak is known (constant memory);
    - `none`: written as they are (integer subtypes still saturate in libsndfile).

    `peak` is the largest absolute sample given to `write`.
    """

    def __init__(
        self, path: str | Path, sample_rate: int, channels: int, subtype: str, fmt: str, clip: str = "clamp"
    ) -> None:
        if clip not in CLIP_MODES:
            raise ValueError(f"clip must be one of {', '.join(CLIP_MODES)}, not {clip!r}")
        self.path = Path(path)
        self.sample_rate, self.channels, self.subtype, self.format = sample_rate, channels, subtype, fmt
        self.clip = clip
        self.clipped = 0
        self.peak = 0.0
        self.gain = 1.0
        self.frames = 0
        self._file: sf.SoundFile | None = None
        self._target: contextlib.AbstractContextManager[Path] | None = None
        self._tmp: Path | None = None
        self._held: BinaryIO | None = None  # rescale: the float32 samples until the peak is known

    def __enter__(self) -> AtomicWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._target = atomic_file(self.path)
        self._tmp = self._target.__enter__()
        try:
            try:
                self._file = sf.SoundFile(
                    str(self._tmp),
                    "w",
                    samplerate=self.sample_rate,
                    channels=self.channels,
                    subtype=self.subtype,
                    format=self.format,
                )
            except sf.SoundFileError as err:
                raise _write_error(None, err) from None
            if self.clip == "rescale":
                self._held = create_temp(self.path).open("w+b")
        except BaseException as err:
            self._abandon(err)
            raise
        return self

    def write(self, block: np.ndarray) -> None:
        """Append a (channels, frames) float block."""
        if self._file is None:
            raise RuntimeError("AtomicWriter.write outside its with-block")
        if block.shape[0] != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {block.shape[0]}")
        if block.size:
            self.peak = max(self.peak, float(np.abs(block).max()))
        frames = np.ascontiguousarray(block.T, dtype=np.float32)
        if self._held is not None:
            self._held.write(frames.tobytes())
        else:
            if self.clip == "clamp" and clips(self.subtype) and self.peak > 1.0:
                over = np.abs(frames) > 1.0
                if over.any():
                    self.clipped += int(over.sum())
                    frames = np.clip(frames, -1.0, 1.0)
            self._put(frames)
        self.frames += block.shape[1]

    def _put(self, frames: np.ndarray) -> None:
        """Write (frames, channels) samples, libsndfile's failures as OSErrors with the system's reason."""
        assert self._file is not None
        try:
            self._file.write(frames)
        except sf.SoundFileError as err:
            raise _write_error(self._file, err) from None

    def _release_held(self) -> None:
        """Write the held samples, scaled by `gain`, into the output (rescale mode)."""
        assert self._held is not None and self._file is not None
        self.gain = 1.0 / self.peak if self.peak > 1.0 else 1.0
        self._held.seek(0)
        step = (1 << 16) * self.channels * 4
        while chunk := self._held.read(step):
            samples = np.frombuffer(chunk, np.float32).reshape(-1, self.channels)
            self._put(samples * np.float32(self.gain) if self.gain != 1.0 else samples)

    def _close_held(self) -> None:
        if self._held is not None:
            name = self._held.name
            self._held.close()
            self._held = None
            Path(name).unlink(missing_ok=True)

    def _abandon(self, err: BaseException) -> None:
        """Delete every temporary after a failure in `__enter__` or `__exit__`."""
        self._close_held()
        assert self._target is not None
        self._target.__exit__(type(err), err, err.__traceback__)

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._file is not None and self._target is not None
        try:
            try:
                if exc_type is None and self._held is not None:
                    self._release_held()
            finally:
                try:
                    self._file.close()
                except sf.SoundFileError as err:
                    raise _write_error(self._file, err) from None
        except BaseException as err:
            self._file = None
            self._abandon(err)
            raise
        self._file = None
        self._close_held()
        self._target.__exit__(exc_type, exc, tb)


def _write_error(file: sf.SoundFile | None, err: sf.SoundFileError) -> OSError:
    """libsndfile's error on writing `file` (or opening one, with None) as an OSError with the system's reason:
    soundfile reports every failed write as "System error.", while libsndfile keeps the reason (`sf_strerror` on
    the file, or its last error: "No space left on device")."""
    try:
        handle = file._file if file is not None else sf._ffi.NULL
        text = sf._ffi.string(sf._snd.sf_strerror(handle)).decode(errors="replace")
    except (AttributeError, TypeError):  # soundfile's internals changed: keep its own message
        text = str(err)
    reason = text.split(":", 1)[-1].strip().rstrip(".") or str(err)
    codes = {os.strerror(code): code for code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS)}
    code = codes.get(reason)
    return OSError(code, reason) if code else OSError(reason)


# pipes ---------------------------------------------------------------------------------------------------------


def spool_stdin(folder: str | Path, stream: BinaryIO | None = None) -> Path:
    """Copy standard input (or `stream`) to a new temporary file in `folder` and return its path: decoders need
    to seek, and a pipe cannot. `AudioError` when standard input is a terminal or holds nothing."""
    if stream is None:
        if sys.stdin is None or sys.stdin.isatty():
            raise AudioError("-: standard input is a terminal; pipe audio in (`cat a.wav | tse extract - ...`)")
        stream = sys.stdin.buffer
    path = create_temp(Path(folder) / "stdin")
    with path.open("wb") as out:
        shutil.copyfileobj(stream, out, 1 << 20)
    if path.stat().st_size == 0:
        path.unlink()
        raise AudioError("-: standard input is empty (0 bytes)")
    return path


def stdout_is_terminal() -> bool:
    """Whether standard output is a terminal (audio is never written to one)."""
    return sys.stdout is not None and sys.stdout.isatty()


def send_to_stdout(path: str | Path, stream: BinaryIO | None = None) -> None:
    """Stream the finished file `path` to standard output (or `stream`) and flush it; a closed pipe (`| head`)
    ends quietly, as for other tools."""
    out = stream if stream is not None else sys.stdout.buffer
    try:
        with Path(path).open("rb") as f:
            shutil.copyfileobj(f, out, 1 << 20)
        out.flush()
    except BrokenPipeError:
        stdout_closed()
