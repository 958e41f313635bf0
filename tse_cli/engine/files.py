"""Per-file plumbing: an input's reader and resampler, and one task's visual clue, resamplers and atomic writers.

A `TaskFiles` is planned from headers alone (`prepare`), opened only while its group runs (`open`), fed from an
`InputReader` at the model's rate (shared by every task of one input: `--each` reads a file once for all its
classes), written (`put`, `finish`) and released when it finishes, so that only the files of the running group
hold buffers, whatever the number of inputs. Every sample array is float32 (channels, n).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Generator
from pathlib import Path

import numpy as np

from tse_cli.atomic import remove_own
from tse_cli.audio import AtomicWriter, AudioError, AudioInfo, BlockReader, check_samples, output_format
from tse_cli.engine.records import Task, Written
from tse_cli.errors import os_reason
from tse_cli.resample import StreamResampler, resampled_length
from tse_cli.visual import check_visual_clue, clue_frames, frames_covering, read_visual_clue

READ_FRAMES = 1 << 15  # smallest read from disk, whatever the model's block size


def prepare(task: Task, model_rate: int, rate: str | int, clue_rate: float | None) -> TaskFiles:
    """Plan a task from its header (`Task.header`, read once) and its visual clue (checked whole in constant
    memory); nothing stays open.

    `rate`: the outputs' sample rate, `keep` (the input's), `model` or a rate in Hz, moved to the nearest the
    task's format stores (Opus: 8 to 48 kHz). `clue_rate`: the model's visual clue frames per second, None for
    class clues. Raises `AudioError` (or a `VisualClueError`) with a one-line reason when the task cannot run.
    """
    info = task.header()
    wanted = info.sample_rate if rate == "keep" else model_rate if rate == "model" else int(rate)
    files = TaskFiles(task, info, model_rate, output_format(task.format).storable_rate(wanted))
    if clue_rate is not None:
        if task.visual is None:
            raise AudioError(f"{task.input}: this model needs a visual clue (--visual)")
        files.clue_frames = visual_frames(task.visual, files.model_total, model_rate, clue_rate)
    elif task.clue is None:
        raise AudioError(f"{task.input}: no class clue given")
    return files


def visual_frames(path: Path, samples: int, sample_rate: int, clue_rate: float) -> int:
    """How many frames of the lip embeddings in `path` a file of `samples` audio samples at `sample_rate` Hz gets.

    Validated by `tse_cli.visual` (one-line `VisualClueError`s: values, shape, frame rate). The file's own frames
    are kept up to the last one that covers some audio; a clue shorter than the published alignment
    (`clue_frames`, whole frames of audio) is replicate-padded to it (`read_visual_clue`), as the training data were.
    """
    frames = check_visual_clue(path, samples, sample_rate, values=True)
    covering = min(frames, frames_covering(samples, sample_rate, clue_rate))
    return max(covering, clue_frames(samples, sample_rate, clue_rate))


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


class InputReader:
    """One input read once at the model's rate, for every task of it (`TaskFiles.open` subscribes them).

    `take(n)` returns the next `n` model-rate samples (zeros past the end or after a failure); every input block
    and model-rate block read on the way is also handed to the subscribers (`TaskFiles.mix`), which keep the
    mixture for their residual. `error`: the first read failure (NaN, truncation), which fails every task of
    the input. Reads of one reader happen one at a time (the engine's steps are sequential).
    """

    def __init__(self, info: AudioInfo, model_rate: int, block_frames: int) -> None:
        self.info, self.channels = info, info.channels
        self.error: str | None = None
        self.frames_read = 0
        self.subscribers: list[TaskFiles] = []
        convert = info.sample_rate != model_rate
        self._blocks: Generator[np.ndarray, None, None] | None = iter(BlockReader(info, max(block_frames, READ_FRAMES)))
        self._to_model = StreamResampler(info.sample_rate, model_rate, self.channels) if convert else None
        self._pending = np.zeros((self.channels, 0), np.float32)
        self._eof = False

    def _read_more(self) -> None:
        assert self._blocks is not None
        block = next(self._blocks, None)
        if block is None:
            self._eof = True
            tail = self._to_model.flush() if self._to_model else np.zeros((self.channels, 0), np.float32)
        else:
            self.frames_read += block.shape[1]
            tail = self._to_model.feed(block) if self._to_model else block
        for task in self.subscribers:
            task.mix(block, tail)
        self._pending = np.concatenate([self._pending, tail], axis=1)

    def take(self, n: int) -> np.ndarray:
        """The next `n` model-rate samples (channels, n), zeros past the end or after a failure."""
        if self.error is None and self._blocks is not None:
            try:
                while self._pending.shape[1] < n and not self._eof:
                    self._read_more()
            except AudioError as err:
                self.error = str(err)
        out = self._pending[:, :n]
        self._pending = self._pending[:, n:]
        if out.shape[1] < n:
            out = np.pad(out, ((0, 0), (0, n - out.shape[1])))
        return out

    def close(self) -> None:
        """Close the input file and drop the buffers (no read may be running)."""
        if self._blocks is not None:
            self._blocks.close()  # closes the input file of a reader stopped mid-file
        self._blocks = self._to_model = None
        self._pending = np.zeros((self.channels, 0), np.float32)
        self.subscribers = []


class TaskFiles:
    """The files of one task: its input at the model's rate in (an `InputReader`), its estimate (and residual) out.

    `model_total`: the input's length at the model's rate; `out_rate`/`out_total`: the outputs' rate and length.
    The estimate is resampled from the model's rate to `out_rate`; the residual's mixture is the input itself
    when `out_rate` is the input's, else the model-rate input (resampled to `out_rate` like the estimate), so the
    residual is exactly mixture minus estimate at the output's rate. `clue_frames`: visual clue frames the file
    gets (as `visual_frames` says), 0 for class clues. `error`: the first reason the file failed, None while fine.
    """

    def __init__(self, task: Task, info: AudioInfo, model_rate: int, out_rate: int, clue_frames: int = 0) -> None:
        self.task, self.info = task, info
        self.channels = info.channels
        self.model_rate, self.out_rate = model_rate, out_rate
        self.model_total = resampled_length(info.frames, info.sample_rate, model_rate)
        if out_rate == info.sample_rate:
            self.out_total = info.frames
        else:
            self.out_total = resampled_length(self.model_total, model_rate, out_rate)
        self.clue_frames = clue_frames
        self.reader: InputReader | None = None
        self.visual: np.ndarray | None = None
        self._error: str | None = None
        self._from_model: StreamResampler | None = None
        self._mixture: _Fifo | None = None
        self._mix_resampler: StreamResampler | None = None  # model rate -> a third output rate, for the residual
        self._estimate_fed = 0  # model-rate estimate samples accepted so far (beyond model_total is padding)
        self._frames_out = 0  # output-rate estimate samples written so far
        self._stack = contextlib.ExitStack()
        self._main: AtomicWriter | None = None
        self._residual: AtomicWriter | None = None

    @property
    def key(self) -> Path:
        """What identifies the input: the tasks of one input share one `InputReader`."""
        return self.info.path.resolve()

    @property
    def error(self) -> str | None:
        """The first reason the task failed: its own, or its input's."""
        return self._error or (self.reader.error if self.reader is not None else None)

    @property
    def frames_read(self) -> int:
        """Input frames read so far for this task."""
        return self.reader.frames_read if self.reader is not None else 0

    def open(self, reader: InputReader, clip: str = "clamp") -> None:
        """Load the visual clue, subscribe to `reader` and open the atomic writers (temporary files in the
        destination folders) with clip mode `clip`. A failure fails the task only (the clue changed since
        planning, an output folder that cannot be written)."""
        self.reader = reader
        if self.clue_frames:
            try:
                self.visual = read_visual_clue(self.task.visual, self.clue_frames)
            except (ValueError, OSError) as err:
                self.fail(str(err))
                return
        try:
            self._open_outputs(clip)
        except (OSError, RuntimeError) as err:
            self.fail(f"{self.task.output}: cannot create ({os_reason(err)})")
            return
        reader.subscribers.append(self)

    def _open_outputs(self, clip: str) -> None:
        """The writers of the outputs that are not `Task.kept`, and the resamplers they need."""
        in_rate = self.info.sample_rate
        if self.out_rate != self.model_rate:
            self._from_model = StreamResampler(self.model_rate, self.out_rate, self.channels)
        fmt = output_format(self.task.format)
        subtype = fmt.subtype(self.task.subtype, self.info.subtype)

        def writer(path: Path | None) -> AtomicWriter | None:
            if path is None or path in self.task.kept:
                return None
            return self._stack.enter_context(AtomicWriter(path, self.out_rate, self.channels, subtype, fmt.major, clip))

        self._main, self._residual = writer(self.task.output), writer(self.task.residual)
        if self._residual is not None:
            self._mixture = _Fifo(self.channels)
            if self.out_rate not in (in_rate, self.model_rate):
                self._mix_resampler = StreamResampler(self.model_rate, self.out_rate, self.channels)

    def mix(self, block: np.ndarray | None, model_block: np.ndarray) -> None:
        """Keep the mixture for the residual: `block` the next input frames (None at the end of the input),
        `model_block` the model-rate samples that became final with them."""
        if self._mixture is None:
            return
        if self.out_rate == self.info.sample_rate:
            if block is not None:
                self._mixture.push(block)
        elif self._mix_resampler is None:
            self._mixture.push(model_block)
        else:
            resampler = self._mix_resampler
            self._mixture.push(resampler.feed(model_block) if block is not None else _concat(resampler, model_block))

    # writing ---------------------------------------------------------------------------------------------------

    def _write(self, estimate: np.ndarray) -> None:
        estimate = estimate[:, : self.out_total - self._frames_out]
        if not estimate.shape[1]:
            return
        self._frames_out += estimate.shape[1]
        if self._main is not None:
            self._main.write(estimate)
        if self._residual is not None and self._mixture is not None:
            self._residual.write(self._mixture.pop(estimate.shape[1]) - estimate)

    def put(self, estimate: np.ndarray) -> None:
        """Accept the next model-rate estimate samples (channels, m); padding past the end is dropped."""
        if self.error is not None:
            return
        estimate = estimate[:, : self.model_total - self._estimate_fed]
        problem = check_samples(estimate, self._estimate_fed)
        if problem:  # the model diverged on this input: nothing it wrote is kept
            self.fail(f"{self.task.input}: the model's output is unusable: {problem} (at the model's rate)")
            return
        self._estimate_fed += estimate.shape[1]
        self._guarded_write(lambda: self._from_model.feed(estimate) if self._from_model else estimate)

    def _guarded_write(self, produce: Callable[[], np.ndarray]) -> None:
        try:
            self._write(produce())
        except (OSError, RuntimeError, ValueError) as err:
            self.fail(f"{self.task.output}: cannot write ({os_reason(err)})")

    def finish(self) -> None:
        """Flush, check the length and rename the outputs into place; drop them if the task failed. The task's
        `written` then says what each output got (clipped samples, gain).

        Called from the engine's thread once every read and write of the task has returned.
        """
        if self.error is None and self._from_model is not None:
            self._guarded_write(self._from_model.flush)
        if self.error is None and self._frames_out != self.out_total:
            self.fail(f"{self.task.input}: model produced {self._frames_out} of {self.out_total} samples")
        if self.error is None:
            try:
                self._stack.close()  # renames each output into place (a rescaled one is written out here)
            except (OSError, RuntimeError) as err:  # e.g. the output's name became a folder, or the disk filled
                self.fail(f"{self.task.output}: cannot write ({os_reason(err)})")
        if self.error is None:
            writers = [w for w in (self._main, self._residual) if w is not None]
            self.task.written = [Written(w.path, w.sample_rate, w.clipped, w.gain) for w in writers]
            self._release()
        else:
            self.abort()

    def fail(self, error: str) -> None:
        """Mark the task failed (the first reason wins); `finish` or `abort` deletes its temporary outputs.

        Safe from I/O threads: nothing is closed here while another thread may still be writing.
        """
        if self._error is None:
            self._error = error

    def abort(self) -> None:
        """Delete the temporary outputs (a failure, or Ctrl-C); a no-op once they were renamed into place."""
        self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)
        for path in (self.task.output, self.task.residual):  # one created just before an interruption, too
            if path is not None:
                remove_own(path)
        self._release()

    def _release(self) -> None:
        """Drop the buffers, resamplers and visual clue (no read or write may be running); the engine closes the
        reader once every task of its input is done."""
        self._from_model = self._mixture = self._mix_resampler = self.visual = None


def _concat(resampler: StreamResampler, last: np.ndarray) -> np.ndarray:
    """The end of a stream through `resampler`: its output for the `last` block, then its flushed rest."""
    return np.concatenate([resampler.feed(last), resampler.flush()], axis=1)
