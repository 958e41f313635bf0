"""The one resampler of the package: band-limited resampling between any two integer rates, whole signals
(`resample`) or block by block (`StreamResampler`), in memory bounded whatever the rates.

The filter is `torchaudio.functional.resample`'s with its defaults (Hann-windowed sinc, 6 zero crossings,
cut-off at 0.99 of the lower Nyquist frequency). With the rates divided by their gcd, every `orig` input samples
become `new` output samples, and output sample j is

    y[j] = sum_i x[i] * h((i / orig - j / new) * base),   base = min(orig, new) * 0.99,
    h(t) = sinc(t) * cos(pi t / 12)^2 * base / orig  for |t| <= 6, else 0,

so it reads the inputs within 6 * orig / base samples of position j * orig / new (zeros beyond the signal), and
n input samples give ceil(n * new / orig) output samples (torchaudio's rule). Two ways to evaluate it, chosen
per rate pair (`Resampler.table`):

- *table*, for every pair whose reduced rates are small (all pairs of 8, 11.025, 16, 22.05, 24, 32, 44.1, 48,
  88.2, 96 and 192 kHz): torchaudio's own kernel, one row of `2 * width + orig` taps per output phase, applied as
  a convolution of stride `orig`; identical to `torchaudio.functional.resample` on float32 audio, bit for bit.
- *direct*, for pairs whose table would exceed `TABLE_LIMIT` taps (a prime rate such as 44,101 or 12,347 Hz
  against 44.1 kHz: torchaudio builds a 44,100-row table of 7.8 GB there): the taps of each output are computed
  from its exact position (integer arithmetic, then float64), a chunk of outputs at a time, so memory is
  `O(chunk * taps)`; the ratio is exact (no rational approximation, no drift however long the signal). It is the
  same filter: on pairs small enough for both ways the outputs agree within 2e-6 of full scale (float32
  rounding of torchaudio's kernel), and its taps are slightly more accurate (computed in float64).
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch
    from torchaudio.transforms import Resample

LOWPASS_FILTER_WIDTH = 6  # torchaudio's defaults, spelled out because the streaming context depends on them
ROLLOFF = 0.99
TABLE_LIMIT = 1 << 20  # most taps (new * (2 * width + orig)) a rate pair's kernel table may have: 4 MiB
PHASE_LIMIT = 1 << 21  # most taps (new * taps) the direct way keeps precomputed for a rate pair: 8 MiB
CHUNK_TAPS = 1 << 20  # taps the direct way applies at once (rows * outputs * taps): a few 4 MiB arrays
SHAPE_QUANTUM = 4096  # StreamResampler pads its buffer to a multiple of this many samples (table way)

Signal = TypeVar("Signal", np.ndarray, "torch.Tensor")


def resampled_length(frames: int, orig_rate: int, new_rate: int) -> int:
    """Number of samples `frames` input samples become after resampling (torchaudio's ceil rule)."""
    gcd = math.gcd(orig_rate, new_rate)
    return math.ceil((new_rate // gcd) * frames / (orig_rate // gcd))


@functools.lru_cache(maxsize=64)
def resample_transform(orig_rate: int, new_rate: int) -> Resample:
    """torchaudio's kernel table from `orig_rate` to `new_rate` Hz (float32, about 0.3 MB for 44.1 -> 16 kHz),
    computed once per rate pair and shared: it holds no state but the kernel, which is only read.

    Only for pairs with `Resampler(orig_rate, new_rate).table`; others would need gigabytes.
    """
    import torch
    from torchaudio.transforms import Resample

    return Resample(
        orig_rate, new_rate, lowpass_filter_width=LOWPASS_FILTER_WIDTH, rolloff=ROLLOFF, dtype=torch.float32
    )


class Resampler:
    """The filter from `orig_rate` to `new_rate` Hz (see the module docstring), evaluated for any range of
    output samples of a signal of which the caller holds a slice. Stateless once built, so one object may serve
    every thread; get it with `resampler(orig_rate, new_rate)`.

    Attributes: `orig`, `new` (the rates divided by their gcd), `table` (which way it evaluates), `width`
    (input samples either side of a group of `new` outputs that they may read).
    """

    def __init__(self, orig_rate: int, new_rate: int) -> None:
        import torch

        if orig_rate <= 0 or new_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {orig_rate} and {new_rate}")
        gcd = math.gcd(orig_rate, new_rate)
        self.orig_rate, self.new_rate = orig_rate, new_rate
        self.orig, self.new = orig_rate // gcd, new_rate // gcd
        self.base = min(self.orig, self.new) * ROLLOFF
        self.width = math.ceil(LOWPASS_FILTER_WIDTH * self.orig / self.base)  # as torchaudio computes it
        self.table = self.new * (2 * self.width + self.orig) <= TABLE_LIMIT
        self._reach = math.ceil(LOWPASS_FILTER_WIDTH * self.orig / self.base)  # taps either side of a position
        self._taps = 2 * self._reach + 2
        # the direct way's taps of every phase, when they fit (they do unless `new` is in the hundreds of thousands)
        small = not self.table and self.new * self._taps <= PHASE_LIMIT
        self._phases = self._weights(torch.arange(self.new)) if small else None

    def length(self, frames: int) -> int:
        """Output samples of a signal of `frames` input samples."""
        return math.ceil(self.new * frames / self.orig)

    def ready(self, seen: int) -> int:
        """How many outputs from the start are final once the first `seen` input samples are known."""
        if self.table:  # whole groups: group g reads input up to (g + 1) * orig + width
            return max(0, (seen - self.width) // self.orig) * self.new
        # output j reads up to floor(j * orig / new) + reach + 1, which must be below `seen`
        return max(0, ((seen - self._reach - 1) * self.new - 1) // self.orig + 1)

    def first_input(self, output: int) -> int:
        """The input index from which a buffer must start to compute outputs `output` onwards (the table way
        needs it on a group boundary); may be negative (the signal's start: zeros before it)."""
        if self.table:
            return (output // self.new * self.orig - self.width) // self.orig * self.orig
        return output * self.orig // self.new - self._reach

    def run(self, x: Signal, start: int, first: int, stop: int) -> Signal:
        """Outputs [first, stop) of the signal of which `x` (..., samples) holds input samples from index
        `start` on (`start` from `first_input(first)` or earlier; samples past the end of `x` are zeros, which is
        right once the signal ends there). Returns the same type as `x`, float32."""
        import torch

        as_numpy = isinstance(x, np.ndarray)
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) if as_numpy else x.to(torch.float32)
        with torch.inference_mode(as_numpy):  # tensors keep their autograd graph
            y = self._table(t, start, first, stop) if self.table else self._direct(t, start, first, stop)
        return y.numpy() if as_numpy else y

    def _table(self, x: torch.Tensor, start: int, first: int, stop: int) -> torch.Tensor:
        import torch

        if start % self.orig:
            raise ValueError(f"the table way needs a buffer starting on a group boundary, got {start}")
        # zero-pad to a multiple of SHAPE_QUANTUM: the outputs asked for never read the padding (their support
        # ends in the buffer, or the signal ends there and offline pads with zeros too), and the convolution then
        # meets few distinct shapes, so the CPU backend's per-shape caches stay small over hours of audio
        padded = torch.nn.functional.pad(x, (0, -x.shape[-1] % SHAPE_QUANTUM))
        if padded.device.type == "cpu":
            full = resample_transform(self.orig_rate, self.new_rate)(padded)
        else:  # torchaudio computes the same kernel on that device
            from torchaudio.functional import resample as ta_resample

            full = ta_resample(padded, self.orig_rate, self.new_rate, LOWPASS_FILTER_WIDTH, ROLLOFF)
        offset = start // self.orig * self.new
        return full[..., first - offset : stop - offset]

    def _direct(self, x: torch.Tensor, start: int, first: int, stop: int) -> torch.Tensor:
        import torch

        rows = x.shape[:-1]
        flat = x.reshape(-1, x.shape[-1])
        margin = self._taps  # zeros either side of the buffer: the reads before `start` or past the end
        extra = max(0, self._window_end(stop - 1) - start - x.shape[-1])
        padded = torch.nn.functional.pad(flat, (margin, margin + extra))
        step = max(1, CHUNK_TAPS // (self._taps * max(1, flat.shape[0])))
        offsets = torch.arange(-self._reach, self._reach + 2, device=x.device)
        out = []
        for j0 in range(first, stop, step):
            j = torch.arange(j0, min(stop, j0 + step), device=x.device, dtype=torch.int64)
            q, phase = torch.div(j * self.orig, self.new, rounding_mode="floor"), (j * self.orig) % self.new
            weights = self._phases[phase].to(x.device) if self._phases is not None else self._weights(phase)
            windows = padded[:, q[:, None] + offsets[None, :] - start + margin]  # (rows, outputs, taps)
            out.append((windows * weights).sum(dim=-1))
        y = torch.cat(out, dim=-1) if out else flat.new_zeros(flat.shape[0], 0)
        return y.reshape(*rows, -1)

    def _weights(self, phase: torch.Tensor) -> torch.Tensor:
        """(outputs, taps) float32 taps of outputs at `phase` = (j * orig) mod new, for the inputs
        floor(j * orig / new) + (-reach .. reach + 1); computed in float64 from exact integers."""
        import torch

        offsets = torch.arange(-self._reach, self._reach + 2, device=phase.device)
        # t = (i / orig - j / new) * base for those inputs, i.e. (offset * new - phase) * base / (orig * new)
        t = (offsets[None, :] * self.new - phase[:, None]).to(torch.float64) * (self.base / (self.orig * self.new))
        window = torch.cos(t * (math.pi / (2 * LOWPASS_FILTER_WIDTH))) ** 2
        taps = torch.where(t.abs() <= LOWPASS_FILTER_WIDTH, torch.sinc(t) * window * (self.base / self.orig), 0.0)
        return taps.to(torch.float32)

    def _window_end(self, output: int) -> int:
        """One past the last input index output `output` reads (direct way)."""
        return output * self.orig // self.new + self._reach + 2


@functools.lru_cache(maxsize=64)
def resampler(orig_rate: int, new_rate: int) -> Resampler:
    """The shared `Resampler` of a rate pair."""
    return Resampler(int(orig_rate), int(new_rate))


def resample(x: Signal, orig_rate: int, new_rate: int) -> Signal:
    """A whole signal (..., samples) at `orig_rate` -> (..., ceil(samples * new / orig)) float32 at `new_rate`
    Hz; numpy arrays or torch tensors (any device), returned as the same type. Equal rates return `x` itself."""
    if orig_rate == new_rate:
        return x
    r = resampler(orig_rate, new_rate)
    return r.run(x, 0, 0, r.length(x.shape[-1]))


class StreamResampler:
    """Block-wise resampling from `orig_rate` to `new_rate` Hz with exact continuity.

    `feed(x (channels, n))` returns the output samples that are final so far, `flush()` the rest; their
    concatenation has `resampled_length(total, orig_rate, new_rate)` samples and equals `resample` on the whole
    signal (bit for bit the table way; to float rounding the direct way). Memory is bounded by one block plus the
    filter's context (`width + orig` samples the table way, about 12 * orig / min(orig, new) the direct way).
    """

    def __init__(self, orig_rate: int, new_rate: int, channels: int) -> None:
        self._r = resampler(orig_rate, new_rate)
        self._buf = np.zeros((channels, 0), dtype=np.float32)
        self._buf_start = 0  # absolute input index of _buf[:, 0]
        self._seen = 0  # input samples fed so far
        self._done = 0  # output samples emitted so far

    def _emit(self, stop: int) -> np.ndarray:
        """Output samples [_done, stop), then drop the input no later output reads."""
        out = self._r.run(self._buf, self._buf_start, self._done, stop)
        self._done = stop
        keep_from = max(self._buf_start, self._r.first_input(stop))
        self._buf = self._buf[:, keep_from - self._buf_start :]
        self._buf_start = keep_from
        return out

    def feed(self, x: np.ndarray) -> np.ndarray:
        """Add input (channels, n); return the newly final output (channels, m)."""
        self._buf = np.concatenate([self._buf, x.astype(np.float32, copy=False)], axis=1)
        self._seen += x.shape[1]
        ready = self._r.ready(self._seen)
        if ready <= self._done:
            return np.zeros((x.shape[0], 0), dtype=np.float32)
        return self._emit(ready)

    def flush(self) -> np.ndarray:
        """The remaining output: the signal ends here (zero padding beyond it, as offline)."""
        total = self._r.length(self._seen)
        if total <= self._done or self._buf.shape[1] == 0:
            return np.zeros((self._buf.shape[0], 0), dtype=np.float32)
        return self._emit(total)
