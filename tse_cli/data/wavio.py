"""Audio I/O for mixture building: WAV writing, and decoding + resampling with an on-disk cache.

Every output goes through a temporary file in the destination folder and `os.replace` (`tse_cli.atomic`), so an
interrupted run never leaves a partial file under its final name. Decoded sources are cached as float32 mono
`.npy` files at the target rate, keyed by (absolute path, size, mtime, rate, resampler), so a second build
skips decoding and resampling.
"""

from __future__ import annotations

import hashlib
import io
import struct
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

from tse_cli.atomic import write_bytes
from tse_cli.resample import resample

DECODER = "resample-2"  # part of every cache key: decodes of an older resampler are not reused
WAV_HEADER = struct.Struct(
    "<4sI4s4sIHHIIHH4sI"
)  # RIFF, size, WAVE, fmt, 16, PCM, channels, rate, bytes/s, align, bits, data, size
MAX_WAV_DATA = 0xFFFFFFFF - (WAV_HEADER.size - 8)  # RIFF sizes are 32-bit: larger files are left to libsndfile


class SourceError(ValueError):
    """A source clip that cannot be read; the message names the file."""


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> None:
    """Write (T,) or (T, C) float audio as a WAV file atomically (values beyond [-1, 1] clip when written as PCM).

    PCM_16 files are assembled here (`pcm16_wav`); other subtypes are encoded by soundfile, into memory first,
    since libsndfile's close on a real file fsyncs, which costs more than the encoding.
    """
    if subtype == "PCM_16" and audio.size * 2 <= MAX_WAV_DATA:
        write_bytes(path, pcm16_wav(audio, sample_rate))
        return
    buf = io.BytesIO()
    sf.write(buf, audio, sample_rate, subtype=subtype, format="WAV")
    write_bytes(path, buf.getbuffer())


def pcm16_wav(audio: np.ndarray, sample_rate: int) -> bytearray:
    """The bytes of a 16-bit PCM WAV file of (T,) or (T, C) float audio: the canonical 44-byte header (what
    libsndfile writes), then samples round(x * 32768) to nearest, clipped to the int16 range (libsndfile's own
    float conversion rounds differently), quantised straight into the file's buffer."""
    frames = audio.reshape(audio.shape[0], -1)
    size = frames.size * 2
    out = bytearray(WAV_HEADER.size + size)
    channels = frames.shape[1]
    WAV_HEADER.pack_into(
        out, 0, b"RIFF", WAV_HEADER.size - 8 + size, b"WAVE", b"fmt ", 16, 1, channels,
        sample_rate, sample_rate * 2 * channels, 2 * channels, 16, b"data", size,
    )  # fmt: skip
    scaled = np.multiply(frames, np.float32(32768.0), dtype=np.float32)
    np.rint(scaled, out=scaled)
    np.clip(scaled, -32768, 32767, out=scaled)
    np.copyto(np.frombuffer(out, "<i2", offset=WAV_HEADER.size).reshape(frames.shape), scaled, casting="unsafe")
    return out


def decode(path: str | Path, sample_rate: int) -> np.ndarray:
    """Read any soundfile-readable file as mono float32 (T,) at `sample_rate` (channels averaged)."""
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as err:
        raise SourceError(f"{path}: unreadable ({err})") from None
    if data.shape[0] == 0:
        raise SourceError(f"{path}: no audio frames")
    if not np.isfinite(data).all():
        raise SourceError(f"{path}: contains NaN or infinite samples")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return resample(np.ascontiguousarray(mono), rate, sample_rate)


class SourceCache:
    """Decoded mono float32 sources at one sample rate: in memory (bounded LRU) and as `.npy` files on disk.

    `cache_dir=None` keeps only the in-memory cache. Safe across processes: files are written atomically and
    two workers decoding the same clip write identical bytes.
    """

    def __init__(self, sample_rate: int, cache_dir: str | Path | None, max_bytes: int = 512 << 20) -> None:
        self.sample_rate = sample_rate
        self.dir = Path(cache_dir) / f"{sample_rate}" if cache_dir is not None else None
        self.max_bytes = max_bytes
        self._mem: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._keys: dict[str, str] = {}
        self._values: dict[str, float] = {}

    def key(self, path: str | Path) -> str:
        """Cache key of a file: changes when the file is replaced or edited (memoised per path for this object)."""
        hit = self._keys.get(str(path))
        if hit is not None:
            return hit
        key = self._key(Path(path).resolve())
        self._keys[str(path)] = key
        return key

    def _key(self, path: Path) -> str:
        try:
            st = path.stat()
        except OSError as err:
            raise SourceError(f"{path}: unreadable ({err.strerror})") from None
        ident = f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0{self.sample_rate}\0{DECODER}"
        return hashlib.sha1(ident.encode()).hexdigest()

    def get(
        self, path: str | Path, prepare: Callable[[np.ndarray], np.ndarray] | None = None, tag: str = ""
    ) -> np.ndarray:
        """The decoded clip (read-only array); decodes and stores it on a miss.

        `prepare` (named by `tag`) derives a variant (trimmed, silence removed...) that is memoised in memory
        beside the decoded clip; only decoded clips go to disk.
        """
        key = self.key(path)
        mem_key = f"{key}:{tag}" if prepare is not None else key
        hit = self._mem.get(mem_key)
        if hit is not None:
            self._mem.move_to_end(mem_key)
            return hit
        audio = self._mem.get(key)
        if audio is None:
            audio = self._load_disk(key)
            if audio is None:
                audio = decode(path, self.sample_rate)
                self._store_disk(key, audio)
            audio.setflags(write=False)
            self._remember(key, audio)
        if prepare is None:
            return audio
        variant = prepare(audio)
        variant.setflags(write=False)
        self._remember(mem_key, variant)
        return variant

    def value(self, path: str | Path, tag: str, compute: Callable[[], float]) -> float:
        """A number derived from a clip (its RMS...), named by `tag`: `compute()` once for this cache's life."""
        key = f"{self.key(path)}:{tag}"
        hit = self._values.get(key)
        if hit is None:
            hit = self._values[key] = compute()
        return hit

    def _load_disk(self, key: str) -> np.ndarray | None:
        if self.dir is None:
            return None
        file = self.dir / key[:2] / f"{key}.npy"
        try:
            return np.load(file)
        except (OSError, ValueError):
            return None

    def _store_disk(self, key: str, audio: np.ndarray) -> None:
        if self.dir is None:
            return
        folder = self.dir / key[:2]
        folder.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.save(buffer, audio)
        write_bytes(folder / f"{key}.npy", buffer.getvalue())

    def _remember(self, key: str, audio: np.ndarray) -> None:
        self._mem[key] = audio
        self._bytes += audio.nbytes
        while self._bytes > self.max_bytes and len(self._mem) > 1:
            _, old = self._mem.popitem(last=False)
            self._bytes -= old.nbytes
