"""The real-time loop of `tse stream`: blocks from a byte stream through a causal model to a byte stream.

Per block of `chunk` input frames: read exactly that many bytes (waiting for them as they arrive, nothing more),
decode, resample to the model's rate (`StreamResampler`, exact and streaming: it holds back only its filter's
lookahead), feed the model's streamer (every channel is one batch row, as in `tse extract`), resample back to
the input's rate (`sample_rate="keep"`), encode and write the samples that are final, at once. The end of the
input or Ctrl-C (`ByteSource.interrupted`) ends the loop; the frames already read go through, then the
streamer and resamplers are flushed, so the output has exactly as many frames as the input (at the output's
rate) and equals `tse extract` on the same audio: the engine runs the same resamplers and streamer, and both
are exact for any block size.

Latency, for a real-time source: output sample s leaves (frames read - s) / rate seconds after input sample s
was captured, plus compute time. The first part is one chunk plus the model's lookahead (and the resamplers');
`Meter` measures both parts per block and reports them with the real-time factor (RTF, compute seconds per
second of audio).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from tse_cli.models.protocol import CausalModel
from tse_cli.resample import StreamResampler, resampled_length
from tse_cli.wavstream import ByteSink, ByteSource, Encoder, PcmFormat, StreamError, wav_header

REPORT_SECONDS = 5.0  # wall seconds between two `Meter` reports


class CausalChain:
    """A causal model between two sample rates, fed blocks of any size.

    `feed(x)`: float32 (channels, n) at `in_rate` -> the output frames (channels, m) that are final, at
    `out_rate` (`in_rate` when `keep_rate`, else the model's); `flush()`: the rest. The concatenated output has
    exactly `in frames` frames (or the model-rate length when not `keep_rate`), like `tse extract`'s.
    """

    def __init__(
        self,
        model: CausalModel,
        clue: np.ndarray,
        channels: int,
        in_rate: int,
        keep_rate: bool = True,
        device: torch.device | str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.channels, self.in_rate, self.model_rate = channels, in_rate, int(model.sample_rate)
        self.out_rate = in_rate if keep_rate else self.model_rate
        convert = in_rate != self.model_rate
        self.to_model = StreamResampler(in_rate, self.model_rate, channels) if convert else None
        self.from_model = StreamResampler(self.model_rate, in_rate, channels) if convert and keep_rate else None
        query = torch.from_numpy(np.repeat(clue[None].astype(np.float32), channels, axis=0)).to(self.device)
        self.streamer = model.streamer(query)
        self.frames_in = self.frames_out = 0

    @property
    def latency_samples(self) -> int:
        """The model's algorithmic latency, at the model's rate (see its `latency_samples`)."""
        return int(self.model.latency_samples)

    def _model(self, x: np.ndarray) -> np.ndarray:
        """Model-rate samples (channels, n) through the streamer -> its final output (channels, m)."""
        return _numpy(self.streamer.feed(torch.from_numpy(x).unsqueeze(1).to(self.device)))

    def feed(self, x: np.ndarray) -> np.ndarray:
        """Input (channels, n) at `in_rate` -> the newly final output (channels, m) at `out_rate`."""
        self.frames_in += x.shape[1]
        y = self._model(self.to_model.feed(x) if self.to_model is not None else x)
        return self._out(self.from_model.feed(y) if self.from_model is not None else y, final=False)

    def flush(self) -> np.ndarray:
        """The input has ended: the remaining output (channels, m)."""
        held = self._model(self.to_model.flush()) if self.to_model is not None else None  # the resampler's tail
        y = _numpy(self.streamer.flush())
        if held is not None:
            y = np.concatenate([held, y], axis=1)
        if self.from_model is not None:
            y = np.concatenate([self.from_model.feed(y), self.from_model.flush()], axis=1)
        return self._out(y, final=True)

    def _out(self, y: np.ndarray, final: bool) -> np.ndarray:
        """Cut the output at the input's length (the back-resampler rounds the model-rate length up)."""
        if self.out_rate == self.in_rate:
            total = self.frames_in
        elif final:
            total = resampled_length(self.frames_in, self.in_rate, self.out_rate)
        else:  # never ahead of the input read so far
            total = self.frames_in * self.out_rate // self.in_rate
        y = y[:, : max(0, total - self.frames_out)]
        self.frames_out += y.shape[1]
        return y


def _numpy(y: torch.Tensor) -> np.ndarray:
    """A streamer output (rows, 1, m) as float32 (rows, m) on the CPU."""
    return y[:, 0].float().cpu().numpy()


class Meter:
    """Per-block compute time and latency, reported every `REPORT_SECONDS` of wall time through `report(line)`.

    Latency of a block = (input frames read - the block's first output frame, at the input's rate) / rate, the
    audio still inside tse (one chunk and the lookahead), plus the compute time from reading the block to
    writing its output. Falling behind real time (compute > audio over a report period) is reported as a warning.
    """

    def __init__(self, rate: int, report: Callable[[str], None]) -> None:
        self.rate, self.report = rate, report
        self.audio_total = 0.0  # seconds of audio read
        self.last = time.perf_counter()  # when the current period started
        self._new_period()

    def _new_period(self) -> None:
        self.audio = self.compute = self.latency_sum = self.latency_max = 0.0
        self.outputs = 0  # blocks that wrote output

    def block(self, frames: int, compute: float, buffered: float | None) -> None:
        """One block: `frames` input frames, `compute` seconds, `buffered` seconds of audio held (None: no output)."""
        self.audio_total += frames / self.rate
        self.audio += frames / self.rate
        self.compute += compute
        if buffered is not None:
            latency = buffered + compute
            self.latency_sum += latency
            self.latency_max = max(self.latency_max, latency)
            self.outputs += 1
        now = time.perf_counter()
        if now - self.last >= REPORT_SECONDS:
            self.emit(now)

    def emit(self, now: float | None = None, warn: bool = True) -> None:
        """Report the period so far and start a new one; `warn` when it fell behind real time."""
        now = time.perf_counter() if now is None else now
        rtf = self.compute / self.audio if self.audio else 0.0
        line = f"stream: {self.audio_total:.1f} s of audio, RTF {rtf:.3f}"
        if self.outputs:
            mean, worst = 1e3 * self.latency_sum / self.outputs, 1e3 * self.latency_max
            per_block = 1e3 * self.compute / self.outputs
            line += f", latency {mean:.1f} ms mean, {worst:.1f} ms max (compute {per_block:.2f} ms per output block)"
        self.report(line)
        if warn and rtf > 1.0:
            self.report(
                f"warning: compute falls behind real time (RTF {rtf:.2f} over the last {now - self.last:.1f} s): "
                "the delay grows; use a larger --chunk or a faster --device"
            )
        self._new_period()
        self.last = now


@dataclass
class Outcome:
    """How a stream ended: `interrupted` by Ctrl-C (else the input ended); frames in and out; PCM samples
    clipped; bytes of an incomplete last frame that were dropped."""

    interrupted: bool
    frames_in: int
    frames_out: int
    clipped: int
    dropped_bytes: int


def run(
    source: ByteSource,
    sink: ByteSink,
    chain: CausalChain,
    in_format: PcmFormat,
    out_format: PcmFormat,
    *,
    chunk: int,
    wav: bool,
    data_bytes: int | None = None,
    meter: Meter | None = None,
) -> Outcome:
    """Stream `source` (at its audio data, in `in_format`) through `chain` to `sink`, a WAV stream (`wav`) or raw.

    `chunk`: input frames per block; `data_bytes`: the input's declared audio size, None when unknown.
    Raises `StreamError` for non-finite samples and `BrokenPipeError` when the sink's reader has gone.
    """
    frame_bytes, clipped = in_format.frame_bytes, 0
    if wav:
        sink.write(wav_header(out_format))
    header_bytes = sink.bytes_written
    left = data_bytes
    data = b""
    encoder = Encoder(out_format)

    def put(y: np.ndarray) -> None:
        nonlocal clipped
        encoded, n = encoder.encode(y)
        clipped += n
        sink.write(encoded)

    try:
        while not (source.eof or source.interrupted) and left != 0:
            want = chunk * frame_bytes if left is None else min(chunk * frame_bytes, left)
            data = source.read(want)
            if left is not None:
                left -= len(data)
            whole = len(data) // frame_bytes * frame_bytes
            if not whole:
                break
            read_at = time.perf_counter()
            x = in_format.decode(data[:whole])
            bad = ~np.isfinite(x)
            if bad.any():
                frame = chain.frames_in + int(np.argmax(bad.any(axis=0)))
                raise StreamError(f"stdin: non-finite sample (NaN or inf) at frame {frame}")
            first = chain.frames_out
            y = chain.feed(x)
            put(y)
            if meter is not None:
                buffered = (chain.frames_in - first * chain.in_rate / chain.out_rate) / chain.in_rate
                meter.block(x.shape[1], time.perf_counter() - read_at, buffered if y.shape[1] else None)
        put(chain.flush())
    finally:
        encoder.close()
    if meter is not None:
        meter.emit(warn=False)  # the last, partial period: too late to act on
    if wav and sink.bytes_written - header_bytes < 1 << 32:
        sink.rewrite(wav_header(out_format, sink.bytes_written - header_bytes))
    return Outcome(source.interrupted, chain.frames_in, chain.frames_out, clipped, len(data) % frame_bytes)
