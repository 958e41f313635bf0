"""Per-file plumbing: one task's input reader, resamplers, visual clue and atomic output writers.

A `TaskFiles` is planned from headers alone (`prepare`), opened only while its group runs (`open`), read at the
model's rate (`take`), written (`put`, `finish`) and released when it finishes, so that only the files of the
running group hold buffers, whatever the number of inputs. Every sample array is float32 (channels, n).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Generator
from pathlib import Path

import numpy as np

from tse_cli.atomic import remove_own
from tse_cli.audio import AtomicWriter, AudioError, AudioInfo, BlockReader, check_samples, default_subtype
from tse_cli.engine.records import Task
from tse_cli.errors import os_reason
from tse_cli.resample import StreamResampler, resampled_length
from tse_cli.visual import check_visual_clue, clue_frames, frames_covering, read_visual_clue

READ_FRAMES = 1 << 15  # smallest read from disk, whatever the model's block size


def prepare(task: Task, model_rate: int, keep_rate: bool, clue_rate: float | None) -> TaskFiles:
    """Plan a task from its header (`Task.header`, read once) and its visual clue (checked whole in constant
    memory); nothing stays open.

    `clue_rate`: the model's visual clue frames per second, None for class clues. Raises `AudioError` (or a
    `VisualClueError`) with a one-line reason when the task cannot run.
    """
    files = TaskFiles(task, task.header(), model_rate, keep_rate)
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


class TaskFiles:
    """The files of one task: its input at the model's rate in, its estimate (and residual) out.

    `model_total`: the input's length at the model's rate; `out_rate`/`out_total`: the outputs' rate and length
    (the input's with `keep_rate`, else the model's). `clue_frames`: visual clue frames the file gets (as
    `visual_frames` says), 0 for class clues. `error`: the first reason the file failed, None while it is fine.
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
        """Load the visual clue, set up the reader and resamplers, then open the atomic writers (temporary files
        in the destination folders). A failure fails the file only (the clue changed since planning, an output
        folder that cannot be written)."""
        if self.clue_frames:
            try:
                self.visual = read_visual_clue(self.task.visual, self.clue_frames)
            except (ValueError, OSError) as err:
                self.fail(str(err))
                return
        try:
            self._open_audio(block_frames)
        except (OSError, RuntimeError) as err:
            self.fail(f"{self.task.output}: cannot create ({os_reason(err)})")

    def _open_audio(self, block_frames: int) -> None:
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
        """Flush, check the length and rename the outputs into place; drop them if the file failed.

        Called from the engine's thread once every read and write of the file has returned.
        """
        if self.error is None and self._from_model is not None:
            self._guarded_write(self._from_model.flush)
        if self.error is None and self._writers[0].frames != self.out_total:
            self.fail(f"{self.task.input}: model produced {self._writers[0].frames} of {self.out_total} samples")
        if self.error is None:
            try:
                self._stack.close()  # renames each output into place
            except OSError as err:  # e.g. the output's name became a folder, or the disk filled on the last flush
                self.fail(f"{self.task.output}: cannot write ({os_reason(err)})")
        if self.error is None:
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
        for path in (self.task.output, self.task.residual):  # one created just before an interruption, too
            if path is not None:
                remove_own(path)
        self._release()

    def _release(self) -> None:
        """Close the input and drop the buffers, resamplers and visual clue (no read or write may be running)."""
        if self._blocks is not None:
            self._blocks.close()  # closes the input file of a reader stopped mid-file
        self._blocks = self._to_model = self._from_model = self._mixture = self.visual = None
        self._pending = np.zeros((self.channels, 0), np.float32)

    @property
    def clipped(self) -> int:
        """Output samples clipped to [-1, 1] so far, over every output of the task."""
        return sum(w.clipped for w in self._writers)
