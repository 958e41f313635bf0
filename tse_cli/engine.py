"""The extraction engine: files in, files out, in constant memory, through any model of the protocol.

Models stay pure (tensors in, tensors out, see `tse_cli.models`); the engine owns the rest. Per group of up to
`batch_size` files it reads blocks (`tse_cli.audio.BlockReader`), resamples them to the model's rate
(`StreamResampler`), stacks every channel of every file as one batch row (mono models, channels as batch),
runs the model block by block, resamples the estimate back (or keeps the model's rate) and appends it to an
atomic writer, so neither a file nor its output is ever held whole on the device or in memory:

- causal models (`model.streamer(clue)`): each block is fed to one streamer with carried state and the rest
  flushed at the end, so the output equals `model.forward` on the whole signal for any block size;
- window models (`model.window_samples`): windows of that length with a quarter overlap, linear crossfades
  summing to one, each window through `model.forward(x, clue, **options)` (DPM-TSE's steps/eta/generator);
  visual clues (`model.clue_rate` frames per second) are sliced to each window, never beyond the frames the
  file has (a window running past the end gets fewer frames; the model aligns them). A file shorter than a
  window goes through in one piece.

Files of a group run in lockstep and have one model-rate length (and one clue length), so each file's result
equals running it alone; failures (a NaN mid-file, a truncated file) drop only their own file. `jobs > 1` reads
the next blocks and writes the previous ones in a thread pool while the model runs. Planning reads headers only
(and checks visual clues chunk by chunk); a file's reader, resamplers and clue exist only while its group runs,
and resampling kernels are shared per rate pair, so memory does not grow with the number of files.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tse_cli.audio import (
    AtomicWriter,
    AudioError,
    AudioInfo,
    BlockReader,
    StreamResampler,
    default_subtype,
    probe,
    resampled_length,
)
from tse_cli.visual import check_visual_clue, clue_frames, frames_before, frames_covering, read_visual_clue

WINDOW_OVERLAP = 0.25  # fraction of a window shared with the next one
READ_FRAMES = 1 << 15  # smallest read from disk, whatever the model's block size


class DeviceError(ValueError):
    """A device that was asked for but is not available."""


def resolve_device(spec: str) -> torch.device:
    """`auto` (first CUDA GPU, else CPU), `cpu`, `cuda` or `cuda:N`; raise `DeviceError` if not available."""
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        index = spec.partition(":")[2]
        if index and not index.isdigit():
            raise DeviceError(f"invalid device {spec!r}; use auto, cpu, cuda or cuda:N")
        if not torch.cuda.is_available():
            raise DeviceError(f"device {spec!r} requested but CUDA is not available (use --device cpu)")
        if index and int(index) >= torch.cuda.device_count():
            raise DeviceError(f"device {spec!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
        return torch.device(spec)
    raise DeviceError(f"invalid device {spec!r}; use auto, cpu, cuda or cuda:N")


def model_kind(model: nn.Module) -> str:
    """`"stream"` for causal models with `streamer`, `"window"` for models with `window_samples`."""
    if callable(getattr(model, "streamer", None)):
        return "stream"
    if getattr(model, "window_samples", None):
        return "window"
    raise ValueError(f"{type(model).__name__} declares neither streamer() nor window_samples")


def check_options(model: nn.Module, options: dict[str, Any]) -> None:
    """Raise ValueError if `model.forward` does not take one of the given inference options (e.g. `steps`)."""
    if not options:
        return
    params = inspect.signature(model.forward).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [name for name in options if name not in params and not takes_any]
    if unknown or model_kind(model) == "stream":
        names = ", ".join(unknown or options)
        raise ValueError(f"model {getattr(model, 'arch', type(model).__name__)} takes no option(s): {names}")


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


class _Fifo:
    """A thread-safe queue of samples (channels, n) for aligning the mixture with the delayed estimate."""

    def __init__(self, channels: int) -> None:
        self._parts: list[np.ndarray] = []
        self._channels = channels
        self._lock = threading.Lock()

    def push(self, x: np.ndarray) -> None:
        with self._lock:
            self._parts.append(x)

    def pop(self, n: int) -> np.ndarray:
        with self._lock:
            data = np.concatenate(self._parts, axis=1) if self._parts else np.zeros((self._channels, 0), np.float32)
            out, rest = data[:, :n], data[:, n:]
            self._parts = [rest] if rest.shape[1] else []
        return out


class _File:
    """One task: planned from headers alone, then opened for work (`open`: reader, resamplers, visual clue,
    writers), read at the model's rate (`take`), written (`put`, `finish`) and released when it finishes, so that
    only the files of the running group hold buffers, whatever the number of inputs.

    `clue_frames`: visual clue frames the file gets (aligned as `_visual_frames` says), 0 for class clues.
    """

    def __init__(self, task: Task, info: AudioInfo, model_rate: int, keep_rate: bool, clue_frames: int = 0) -> None:
        self.task, self.info = task, info
        self.channels = info.channels
        self.model_rate = model_rate
        self.model_total = resampled_length(info.frames, info.sample_rate, model_rate)
        self.keep_rate = keep_rate  # the residual is then taken at the input (= output) rate
        self.out_rate = info.sample_rate if keep_rate else model_rate
        self.out_total = info.frames if keep_rate else self.model_total
        self.clue_frames = clue_frames
        self.error: str | None = None
        self.frames_read = 0
        self.visual: np.ndarray | None = None
        self._blocks: Generator[np.ndarray, None, None] | None = None
        self._to_model: StreamResampler | None = None
        self._from_model: StreamResampler | None = None
        self._mixture: _Fifo | None = None
        self._pending = np.zeros((self.channels, 0), np.float32)
        self._eof = False
        self._estimate_fed = 0  # model-rate estimate samples accepted so far (beyond model_total is padding)
        self._stack = contextlib.ExitStack()
        self._writers: list[AtomicWriter] = []

    def open(self, block_frames: int) -> None:
        """Set up the reader and resamplers, then open the atomic writers (temporary files in the destination
        folders); the visual clue is loaded by the engine, which knows its frame rate."""
        rate, convert = self.info.sample_rate, self.info.sample_rate != self.model_rate
        self._blocks = iter(BlockReader(self.info, max(block_frames, READ_FRAMES)))
        self._to_model = StreamResampler(rate, self.model_rate, self.channels) if convert else None
        self._from_model = StreamResampler(self.model_rate, rate, self.channels) if convert and self.keep_rate else None
        self._mixture = _Fifo(self.channels) if self.task.residual else None
        subtype = self.task.subtype or default_subtype(self.info.subtype, self.task.format)
        for path in (self.task.output, self.task.residual):
            if path is not None:
                writer = AtomicWriter(path, self.out_rate, self.channels, subtype, self.task.format)
                self._writers.append(self._stack.enter_context(writer))

    # reading ---------------------------------------------------------------------------------------------------

    def _read_more(self) -> None:
        block = next(self._blocks, None)
        if block is None:
            self._eof = True
            tail = self._to_model.flush() if self._to_model else None
        else:
            self.frames_read += block.shape[1]
            if self._mixture is not None and self.keep_rate:
                self._mixture.push(block)
            tail = self._to_model.feed(block) if self._to_model else block
        if tail is not None and tail.shape[1]:
            if self._mixture is not None and not self.keep_rate:
                self._mixture.push(tail)
            self._pending = np.concatenate([self._pending, tail], axis=1)

    def take(self, n: int) -> np.ndarray:
        """The next `n` model-rate samples (channels, n), zeros past the end or after a failure."""
        if self.error is None:
            try:
                while self._pending.shape[1] < n and not self._eof:
                    self._read_more()
            except AudioError as err:
                self.fail(str(err))
        out = self._pending[:, :n]
        self._pending = self._pending[:, n:]
        if out.shape[1] < n:
            out = np.pad(out, ((0, 0), (0, n - out.shape[1])))
        return out

    # writing ---------------------------------------------------------------------------------------------------

    def _write(self, estimate: np.ndarray) -> None:
        left = self.out_total - self._writers[0].frames
        estimate = estimate[:, :left]
        if not estimate.shape[1]:
            return
        self._writers[0].write(estimate)
        if self._mixture is not None:
            self._writers[1].write(self._mixture.pop(estimate.shape[1]) - estimate)

    def put(self, estimate: np.ndarray) -> None:
        """Accept the next model-rate estimate samples (channels, m); padding past the end is dropped."""
        if self.error is not None:
            return
        estimate = estimate[:, : self.model_total - self._estimate_fed]
        self._estimate_fed += estimate.shape[1]
        self._guarded_write(lambda: self._from_model.feed(estimate) if self._from_model else estimate)

    def _guarded_write(self, produce: Callable[[], np.ndarray]) -> None:
        try:
            self._write(produce())
        except (OSError, RuntimeError, ValueError) as err:
            self.fail(f"{self.task.output}: cannot write ({err})")

    def finish(self) -> None:
        """Flush, check the length and rename the outputs into place; drop them if the file failed.

        Called from the engine's thread once every read and write of the file has returned.
        """
        if self.error is None and self._from_model is not None:
            self._guarded_write(self._from_model.flush)
        if self.error is None and self._writers[0].frames != self.out_total:
            self.fail(f"{self.task.input}: model produced {self._writers[0].frames} of {self.out_total} samples")
        if self.error is None:
            self._stack.close()
            self._release()
        else:
            self.abort()

    def fail(self, error: str) -> None:
        """Mark the file failed (the first reason wins); `finish` or `abort` deletes its temporary outputs.

        Safe from I/O threads: nothing is closed here while another thread may still be writing.
        """
        if self.error is None:
            self.error = error

    def abort(self) -> None:
        """Delete the temporary outputs (a failure, or Ctrl-C); a no-op once they were renamed into place."""
        self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)
        self._release()

    def _release(self) -> None:
        """Close the input and drop the buffers, resamplers and visual clue (no read or write may be running)."""
        if self._blocks is not None:
            self._blocks.close()  # closes the input file of a reader stopped mid-file
        self._blocks = self._to_model = self._from_model = self._mixture = self.visual = None
        self._pending = np.zeros((self.channels, 0), np.float32)

    @property
    def clipped(self) -> int:
        return sum(w.clipped for w in self._writers)


class _Inline:
    """An executor that runs submissions at once in the calling thread (`jobs=1`)."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as err:  # re-raised by result(), like a pool would
            future.set_exception(err)
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        return None


class Engine:
    """Run `model` over tasks. `sample_rate`: `keep` (outputs at the input's rate) or `model`.

    `block_frames`: model-rate samples per streaming block (and input frames per read); `batch_size`: files
    run together; `jobs`: I/O threads; `options`: extra keyword arguments for window models' `forward`
    (`steps`, `eta`, `seed` -> a `generator` on the device, reseeded for each batch so that a file's result does
    not depend on the files run before it).
    """

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        *,
        block_frames: int = 1 << 16,
        batch_size: int = 1,
        jobs: int = 1,
        sample_rate: str = "keep",
        options: dict[str, Any] | None = None,
    ) -> None:
        if sample_rate not in ("keep", "model"):
            raise ValueError(f"sample_rate must be 'keep' or 'model', not {sample_rate!r}")
        if block_frames <= 0 or batch_size <= 0 or jobs <= 0:
            raise ValueError("block_frames, batch_size and jobs must be positive")
        self.device, self.dtype = torch.device(device), dtype
        self.model = model.to(self.device, dtype).eval()
        self.kind = model_kind(model)
        self.rate = int(model.sample_rate)
        self.block_frames, self.batch_size, self.jobs = block_frames, batch_size, jobs
        self.keep_rate = sample_rate == "keep"
        options = dict(options or {})
        self.seed = options.pop("seed", None)
        if self.seed is not None:
            options["generator"] = torch.Generator(self.device)
        check_options(model, options)
        self.options = options
        self._inflight: list[Future] = []  # the current batch's reads and writes

    # planning --------------------------------------------------------------------------------------------------

    def _prepare(self, task: Task) -> _File:
        """Plan a task from headers (and its visual clue, checked whole in constant memory); nothing stays open."""
        info = probe(task.input)
        file = _File(task, info, self.rate, self.keep_rate)
        if self.model.clue_kind == "visual":
            if task.visual is None:
                raise AudioError(f"{task.input}: this model needs a visual clue (--visual)")
            file.clue_frames = _visual_frames(task.visual, file.model_total, self.rate, float(self.model.clue_rate))
        elif task.clue is None:
            raise AudioError(f"{task.input}: no class clue given")
        return file

    def run(
        self,
        tasks: list[Task],
        on_result: Callable[[Result], None] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> list[Result]:
        """Process every task; return one `Result` per task, in order. Ctrl-C deletes all partial outputs."""
        start = time.perf_counter()
        results: dict[int, Result] = {}
        ready: list[tuple[int, _File]] = []
        running: list[_File] = []  # the files of the group in flight
        seconds_done = 0.0  # audio seconds of the groups finished

        def report(index: int, result: Result) -> None:
            results[index] = result
            if on_result:
                on_result(result)

        for i, task in enumerate(tasks):
            try:
                ready.append((i, self._prepare(task)))
            except (ValueError, OSError) as err:  # AudioError, or a bad visual clue
                report(i, Result(task, "failed", error=str(err)))
        total_seconds = sum(f.info.seconds for _, f in ready)

        def progress(step: int = 0, steps: int = 0) -> None:
            if on_progress:
                done = seconds_done + sum(f.frames_read / f.info.sample_rate for f in running)
                elapsed = time.perf_counter() - start
                on_progress(Progress(len(results), len(tasks), done, total_seconds, elapsed, step, steps))

        pool = ThreadPoolExecutor(self.jobs) if self.jobs > 1 else _Inline()
        try:
            for group in self._groups(ready):
                group_start = time.perf_counter()
                if self.seed is not None:
                    self.options["generator"].manual_seed(int(self.seed))
                running = [f for _, f in group]
                self._run_group(running, pool, progress)
                for i, f in group:
                    status = "failed" if f.error else "done"
                    elapsed = time.perf_counter() - group_start
                    report(i, Result(f.task, status, f.info.seconds, elapsed, f.error, f.clipped))
                seconds_done += sum(f.info.seconds for f in running)
                running = []
                progress()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return [results[i] for i in range(len(tasks))]

    def _groups(self, ready: list[tuple[int, _File]]) -> Iterator[list[tuple[int, _File]]]:
        """Batches of up to `batch_size` files of one model-rate length (and clue length), so that each row gets
        exactly what it would get alone: the published causal models look ahead within a decoder chunk, and the
        window models normalise over the whole window, so padding a shorter row would change its output."""
        if self.batch_size == 1:
            yield from ([item] for item in ready)
            return

        def shape(item: tuple[int, _File]) -> tuple[int, int]:
            return item[1].model_total, item[1].clue_frames

        group: list[tuple[int, _File]] = []
        for item in sorted(ready, key=shape):
            if group and (len(group) == self.batch_size or shape(group[0]) != shape(item)):
                yield group
                group = []
            group.append(item)
        if group:
            yield group

    # running ---------------------------------------------------------------------------------------------------

    def _run_group(self, files: list[_File], pool: Any, progress: Callable[..., None]) -> None:
        try:
            for f in files:
                self._open(f)
            live = [f for f in files if f.error is None]
            self._inflight = []
            if live:
                try:
                    with torch.inference_mode():
                        run = self._stream if self.kind == "stream" else self._windows
                        run(live, pool, progress)
                except Exception as err:  # the model failed (bad query for it, out of memory): this batch only
                    for future in self._inflight:  # let reads and writes of the batch settle first
                        future.exception()
                    reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
                    for f in live:
                        f.fail(f"{f.task.input}: extraction failed ({type(err).__name__}: {reason})")
            for f in files:  # the failed ones too: their temporary outputs go, and every file's buffers
                f.finish()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # no thread may still write while files are deleted
            for f in files:
                f.abort()
            raise

    def _open(self, f: _File) -> None:
        """Load the file's visual clue, then open it for work (`_File.open`); failures fail the file only."""
        if f.clue_frames:
            try:
                f.visual = read_visual_clue(f.task.visual, f.clue_frames)
            except (ValueError, OSError) as err:  # the clue changed since planning
                f.fail(str(err))
                return
        try:
            f.open(self.block_frames)
        except (OSError, RuntimeError) as err:
            f.fail(f"{f.task.output}: cannot create ({err})")

    def _batch(self, parts: list[np.ndarray]) -> torch.Tensor:
        """Stack per-file (channels, n) arrays as (rows, 1, n) on the device."""
        x = torch.from_numpy(np.concatenate(parts, axis=0)).unsqueeze(1)
        return x.to(self.device, self.dtype)

    @staticmethod
    def _split(y: np.ndarray, files: list[_File]) -> list[np.ndarray]:
        """(rows, m) -> per-file (channels, m) arrays."""
        bounds = np.cumsum([0] + [f.channels for f in files])
        return [y[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def _class_clue(self, files: list[_File]) -> torch.Tensor:
        rows = [np.repeat(f.task.clue[None], f.channels, axis=0) for f in files]
        return torch.from_numpy(np.concatenate(rows)).to(self.device, self.dtype)

    def _visual_clue(self, files: list[_File], start: int, length: int) -> torch.Tensor:
        """The (rows, frames, 512) clue frames covering model-rate samples [start, start + length), cut at the
        end of the file's clue (the model aligns a short clue itself); the files of a group have one clue length."""
        first = frames_before(start, self.rate, float(self.model.clue_rate))
        stop = frames_covering(start + length, self.rate, float(self.model.clue_rate))
        rows = [np.repeat(f.visual[first:stop][None], f.channels, axis=0) for f in files]
        return torch.from_numpy(np.concatenate(rows)).to(self.device, self.dtype)

    def _steps(self, files: list[_File], pool: Any, sizes: list[int]) -> Iterator[list[np.ndarray]]:
        """Per step, every file's next `sizes[k]` samples; the next step is read ahead in the pool."""

        def read(n: int) -> list[Future]:
            futures = [pool.submit(f.take, n) for f in files]
            self._inflight.extend(futures)
            return futures

        pending = read(sizes[0]) if sizes else []
        for k in range(len(sizes)):
            parts = [p.result() for p in pending]
            if k + 1 < len(sizes):
                pending = read(sizes[k + 1])
            yield parts

    def _write(self, files: list[_File], pool: Any, parts: list[np.ndarray], writes: list[Future]) -> list[Future]:
        for w in writes:  # keep each file's blocks in order
            w.result()
        self._inflight = [f for f in self._inflight if not f.done()]
        futures = [pool.submit(f.put, p) for f, p in zip(files, parts, strict=True)]
        self._inflight.extend(futures)
        return futures

    def _stream(self, files: list[_File], pool: Any, progress: Callable[..., None]) -> None:
        streamer = self.model.streamer(self._class_clue(files))
        total, n = files[0].model_total, self.block_frames  # one length per streamed batch
        sizes = [n] * (total // n) + ([total % n] if total % n else [])
        writes: list[Future] = []
        for parts in self._steps(files, pool, sizes):
            y = streamer.feed(self._batch(parts))
            writes = self._write(files, pool, self._split(_numpy(y), files), writes)
            progress()
        writes = self._write(files, pool, self._split(_numpy(streamer.flush()), files), writes)
        for w in writes:
            w.result()

    def _windows(self, files: list[_File], pool: Any, progress: Callable[..., None]) -> None:
        longest = max(f.model_total for f in files)
        window = int(self.model.window_samples)
        if longest <= window:  # one piece, no padding to the window
            window, hop, count = longest, longest, 1
        else:
            hop = window - int(window * WINDOW_OVERLAP)
            frame = self.rate / float(getattr(self.model, "clue_rate", 0) or self.rate)
            if frame.is_integer():  # hops on clue frame boundaries
                hop = max(1, hop // int(frame)) * int(frame)
            count = math.ceil((longest - (window - hop)) / hop)
        overlap = window - hop
        ramp = (np.arange(overlap, dtype=np.float32) + 0.5) / max(overlap, 1)
        visual = self.model.clue_kind == "visual"
        clue = None if visual else self._class_clue(files)
        options = dict(self.options)
        if "progress" in inspect.signature(self.model.forward).parameters:  # per-step reports (diffusion)
            options["progress"] = progress
        context: np.ndarray | None = None  # the window's last `overlap` input samples, (rows, overlap)
        tail: np.ndarray | None = None  # its crossfaded output still to be summed with the next, (rows, overlap)
        writes: list[Future] = []
        for k, parts in enumerate(self._steps(files, pool, [window] + [hop] * (count - 1))):
            x = np.concatenate(parts, axis=0)
            if context is not None:
                x = np.concatenate([context, x], axis=1)
            context = x[:, hop:]
            if visual:
                clue = self._visual_clue(files, k * hop, window)
            y = _numpy(self.model(self._batch([x]), clue, **options))
            if k > 0:
                y[:, :overlap] = y[:, :overlap] * ramp + tail
            last = k == count - 1
            if not last:
                tail = y[:, hop:] * ramp[::-1]
            writes = self._write(files, pool, self._split(y if last else y[:, :hop], files), writes)
            progress()
        for w in writes:
            w.result()


def _numpy(y: torch.Tensor) -> np.ndarray:
    """A model output (rows, 1, m) as a float32 (rows, m) array on the CPU."""
    return y[:, 0].float().cpu().numpy()


def _visual_frames(path: Path, samples: int, sample_rate: int, clue_rate: float) -> int:
    """How many frames of the lip embeddings in `path` a file of `samples` audio samples at `sample_rate` Hz gets.

    Validated by `tse_cli.visual` (one-line `VisualClueError`s: values, shape, frame rate). The file's own frames
    are kept up to the last one that covers some audio; a clue shorter than the published alignment
    (`clue_frames`, whole frames of audio) is replicate-padded to it (`read_visual_clue`), as the training data were.
    """
    frames = check_visual_clue(path, samples, sample_rate, values=True)
    covering = min(frames, frames_covering(samples, sample_rate, clue_rate))
    return max(covering, clue_frames(samples, sample_rate, clue_rate))
