"""The runner: `Engine` takes a model and a list of tasks, and runs them group by group in constant memory.

Per group of up to `batch_size` files it opens their `TaskFiles` (reader, resamplers, writers), stacks every
channel of every file as one batch row (mono models, channels as batch), runs the model block by block
(`stream_blocks`) or window by window (`OverlapAdd`), and hands each file's share of the estimate back to its
writers. `jobs > 1` reads the next blocks and writes the previous ones in a thread pool while the model runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tse_cli import signals
from tse_cli.atomic import remove_stale
from tse_cli.audio import CLIP_MODES
from tse_cli.devices import keep_cpu_memory
from tse_cli.engine.files import InputReader, TaskFiles, prepare
from tse_cli.engine.records import Progress, Task
from tse_cli.engine.windows import OverlapAdd, plan_windows, stream_blocks, window_frames
from tse_cli.errors import first_line
from tse_cli.models.protocol import ExtractionModel, check_options, model_kind


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
    """Run `model` (any `tse_cli.models.protocol.ExtractionModel`) over tasks. `sample_rate`: the outputs' rate,
    `keep` (the input's), `model` (the model's) or a rate in Hz (each moved to the nearest rate its format stores).

    `block_frames`: model-rate samples per streaming block (and input frames per read); `batch_size`: inputs
    run together (all the tasks of one input always run together, one batch row per task and channel, reading
    the input once); `jobs`: I/O threads; `clip`: what the writers do with samples beyond [-1, 1]
    (`tse_cli.audio.CLIP_MODES`); `options`: the model's `inference_options` for `forward` (DPM-TSE's `steps`,
    `eta`, and `seed` -> a `generator` on the device, reseeded for each batch so that a file's result does not
    depend on the files run before it); ValueError for options the model does not declare.
    """

    def __init__(
        self,
        model: ExtractionModel,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        *,
        block_frames: int = 1 << 16,
        batch_size: int = 1,
        jobs: int = 1,
        sample_rate: str | int = "keep",
        clip: str = "clamp",
        options: dict[str, Any] | None = None,
    ) -> None:
        if sample_rate not in ("keep", "model") and not (isinstance(sample_rate, int) and sample_rate > 0):
            raise ValueError(f"sample_rate must be 'keep', 'model' or a rate in Hz, not {sample_rate!r}")
        if clip not in CLIP_MODES:
            raise ValueError(f"clip must be one of {', '.join(CLIP_MODES)}, not {clip!r}")
        if block_frames <= 0 or batch_size <= 0 or jobs <= 0:
            raise ValueError("block_frames, batch_size and jobs must be positive")
        self.device, self.dtype = torch.device(device), dtype
        if self.device.type == "cpu":
            keep_cpu_memory()  # blocks reuse freed memory instead of faulting in fresh pages
        self.model = model.to(self.device, dtype).eval()
        self.kind = model_kind(model)
        self.rate = int(model.sample_rate)
        self.clue_rate = float(model.clue_rate) if model.clue_kind == "visual" else None
        self.block_frames, self.batch_size, self.jobs = block_frames, batch_size, jobs
        self.sample_rate, self.clip = sample_rate, clip
        options = dict(options or {})
        self.seed = options.pop("seed", None)
        if self.seed is not None:
            options["generator"] = torch.Generator(self.device)
        check_options(model, options)
        self.options = options
        self._inflight: list[Future] = []  # the current batch's reads and writes

    def run(
        self,
        tasks: list[Task],
        on_result: Callable[[Task], None] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> list[Task]:
        """Process every task, filling in its outcome (`status`, `error`, `seconds`, `elapsed`, `written`) and
        passing it to `on_result` as it is decided; return `tasks`. Ctrl-C deletes all partial outputs, and the
        temporaries a killed run left in the output folders (`tse_cli.atomic.remove_stale`) are removed first."""
        start = time.perf_counter()
        for folder in sorted({p.parent for t in tasks for p in (t.output, t.residual) if p is not None}):
            remove_stale(folder)
        reported = 0
        ready: list[TaskFiles] = []
        running: list[TaskFiles] = []  # the files of the group in flight
        seconds_done = 0.0  # audio seconds of the groups finished

        def report(task: Task, error: str | None, seconds: float | None = None, elapsed: float = 0.0) -> None:
            nonlocal reported
            task.status, task.error = ("failed" if error else "done"), error
            task.seconds, task.elapsed = seconds, elapsed
            if error:
                task.written = []
            reported += 1
            if on_result:
                on_result(task)

        for task in tasks:
            try:
                ready.append(prepare(task, self.rate, self.sample_rate, self.clue_rate))
            except (ValueError, OSError) as err:  # AudioError, or a bad visual clue
                report(task, str(err))
        total_seconds = sum(f.info.seconds for f in ready)

        def progress(step: int = 0, steps: int = 0) -> None:
            if on_progress:
                done = seconds_done + sum(f.frames_read / f.info.sample_rate for f in running)
                elapsed = time.perf_counter() - start
                on_progress(Progress(reported, len(tasks), done, total_seconds, elapsed, step, steps))

        pool = ThreadPoolExecutor(self.jobs) if self.jobs > 1 else _Inline()
        try:
            for group in self._groups(ready):
                group_start = time.perf_counter()
                if self.seed is not None:
                    self.options["generator"].manual_seed(int(self.seed))
                running = group
                self._run_group(running, pool, progress)
                for f in group:
                    report(f.task, f.error, f.info.seconds, time.perf_counter() - group_start)
                seconds_done += sum(f.info.seconds for f in running)
                running = []
                progress()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return tasks

    def _groups(self, ready: list[TaskFiles]) -> Iterator[list[TaskFiles]]:
        """Batches of the tasks of up to `batch_size` inputs of one model-rate length (and clue length), so that
        each row gets exactly what it would get alone: the published causal models look ahead within a decoder
        chunk, and the window models normalise over the whole window, so padding a shorter row would change its
        output. The tasks of one input (one per class with `--each`) are never split across batches."""
        inputs: dict[Path, list[TaskFiles]] = {}
        for f in ready:
            inputs.setdefault(f.key, []).append(f)

        def shape(tasks: list[TaskFiles]) -> tuple[int, int]:
            return tasks[0].model_total, tasks[0].clue_frames

        units = list(inputs.values()) if self.batch_size == 1 else sorted(inputs.values(), key=shape)
        group: list[list[TaskFiles]] = []
        for unit in units:
            if group and (len(group) == self.batch_size or shape(group[0]) != shape(unit)):
                yield [f for tasks in group for f in tasks]
                group = []
            group.append(unit)
        if group:
            yield [f for tasks in group for f in tasks]

    # running ---------------------------------------------------------------------------------------------------

    def _run_group(self, files: list[TaskFiles], pool: Any, progress: Callable[..., None]) -> None:
        readers: dict[Path, InputReader] = {}
        try:
            for f in files:
                if f.key not in readers:
                    readers[f.key] = InputReader(f.info, self.rate, self.block_frames)
                f.open(readers[f.key], self.clip)
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
                    reason = first_line(err) if str(err).strip() else ""
                    for f in live:
                        f.fail(f"{f.task.input}: extraction failed ({type(err).__name__}: {reason})")
            signals.check()  # an interruption a finaliser swallowed: nothing of this group is called done
            for f in files:  # the failed ones too: their temporary outputs go, and every file's buffers
                f.finish()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # no thread may still write while files are deleted
            for f in files:
                f.abort()
            raise
        finally:
            for reader in readers.values():
                reader.close()

    def _batch(self, parts: list[np.ndarray]) -> torch.Tensor:
        """Stack per-file (channels, n) arrays as (rows, 1, n) on the device."""
        x = torch.from_numpy(np.concatenate(parts, axis=0)).unsqueeze(1)
        return x.to(self.device, self.dtype)

    @staticmethod
    def _split(y: np.ndarray, files: list[TaskFiles]) -> list[np.ndarray]:
        """(rows, m) -> per-file (channels, m) arrays."""
        bounds = np.cumsum([0] + [f.channels for f in files])
        return [y[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def _class_clue(self, files: list[TaskFiles]) -> torch.Tensor:
        rows = [np.repeat(f.task.clue[None], f.channels, axis=0) for f in files]
        return torch.from_numpy(np.concatenate(rows)).to(self.device, self.dtype)

    def _visual_clue(self, files: list[TaskFiles], start: int, length: int) -> torch.Tensor:
        """The (rows, frames, 512) clue frames covering model-rate samples [start, start + length), cut at the
        end of the file's clue (the model aligns a short clue itself); the files of a group have one clue length."""
        frames = window_frames(start, length, self.rate, self.clue_rate)
        rows = [np.repeat(f.visual[frames][None], f.channels, axis=0) for f in files]
        return torch.from_numpy(np.concatenate(rows)).to(self.device, self.dtype)

    def _steps(self, files: list[TaskFiles], pool: Any, sizes: list[int]) -> Iterator[list[np.ndarray]]:
        """Per step, every file's next `sizes[k]` samples, read once per input (the tasks of an input get the same
        samples); the next step is read ahead in the pool."""
        readers = list(dict.fromkeys(f.reader for f in files))

        def read(n: int) -> dict[InputReader, Future]:
            futures = {reader: pool.submit(reader.take, n) for reader in readers}
            self._inflight.extend(futures.values())
            return futures

        pending = read(sizes[0]) if sizes else {}
        for k in range(len(sizes)):
            parts = {reader: p.result() for reader, p in pending.items()}
            if k + 1 < len(sizes):
                pending = read(sizes[k + 1])
            yield [parts[f.reader] for f in files]

    def _write(self, files: list[TaskFiles], pool: Any, parts: list[np.ndarray], writes: list[Future]) -> list[Future]:
        for w in writes:  # keep each file's blocks in order
            w.result()
        self._inflight = [f for f in self._inflight if not f.done()]
        futures = [pool.submit(f.put, p) for f, p in zip(files, parts, strict=True)]
        self._inflight.extend(futures)
        return futures

    def _stream(self, files: list[TaskFiles], pool: Any, progress: Callable[..., None]) -> None:
        streamer = self.model.streamer(self._class_clue(files))
        sizes = stream_blocks(files[0].model_total, self.block_frames)  # one length per streamed batch
        writes: list[Future] = []
        for parts in self._steps(files, pool, sizes):
            y = streamer.feed(self._batch(parts))
            writes = self._write(files, pool, self._split(_numpy(y), files), writes)
            progress()
        writes = self._write(files, pool, self._split(_numpy(streamer.flush()), files), writes)
        for w in writes:
            w.result()

    def _windows(self, files: list[TaskFiles], pool: Any, progress: Callable[..., None]) -> None:
        frame = self.rate / self.clue_rate if self.clue_rate else 1.0
        plan = plan_windows(max(f.model_total for f in files), int(self.model.window_samples), frame)
        windows = OverlapAdd(plan)
        clue = None if self.clue_rate else self._class_clue(files)
        options = dict(self.options)
        if self.model.takes_progress:  # per-step reports (diffusion)
            options["progress"] = progress
        writes: list[Future] = []
        for k, parts in enumerate(self._steps(files, pool, plan.sizes)):
            x = windows.window(np.concatenate(parts, axis=0))
            if self.clue_rate:
                clue = self._visual_clue(files, k * plan.hop, plan.window)
            y = _numpy(self.model(self._batch([x]), clue, **options))
            writes = self._write(files, pool, self._split(windows.add(y), files), writes)
            progress()
        for w in writes:
            w.result()


def _numpy(y: torch.Tensor) -> np.ndarray:
    """A model output (rows, 1, m) as a float32 (rows, m) array on the CPU."""
    return y[:, 0].float().cpu().numpy()
