"""The worker side of `tse mix`: batches of tasks run in `jobs` processes, this one and `jobs - 1` spawned
workers, every one holding the build's `Context` and one decoded-source cache.

A task is `(split, name, fn, args)`: `fn(ctx, cache, *args)` is a module-level function or a method of a recipe
object (both pickle by name), run in a worker. Results come back in order of completion.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tse_cli.atomic import remove_stale, staging, start_staging
from tse_cli.data.render import Result
from tse_cli.data.sources import Clip
from tse_cli.data.wavio import SourceCache, SourceError
from tse_cli.errors import os_reason
from tse_cli.signals import quiet_children

BATCH = 8  # tasks per worker call
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)

Task = tuple[str, str, Callable[..., Any], tuple]


@dataclass
class Context:
    """Everything a worker needs (pickled once per worker process)."""

    recipe: Any  # a tse_cli.data.recipes.Recipe
    out: Path
    seed: int
    normalize: bool | None
    stems: bool
    cache_dir: Path | None
    sample_rate: int
    pools: dict = field(default_factory=dict)  # split -> the recipe's pools
    names: dict[str, Clip] | None = None  # file name -> the user's copy (rendering existing specs)


_CTX: Context | None = None
_CACHE: SourceCache | None = None


def _keep_freed_blocks() -> None:
    """Let glibc's malloc keep freed blocks of up to 64 MiB for reuse. By default a fresh process hands every
    block over 128 KiB back to the kernel when freed, so each 10 s canvas (640 KB) is new zeroed pages: in a new
    worker the page faults cost as much as the mixing (2 jobs ran slower than 1). Other C libraries: no-op."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, 64 << 20)
        mallopt(M_TRIM_THRESHOLD, 256 << 20)


def init(ctx: Context) -> SourceCache:
    """Make `ctx` this process's context (with a fresh source cache); returns the cache."""
    global _CTX, _CACHE
    _keep_freed_blocks()
    _CTX = ctx
    _CACHE = SourceCache(ctx.sample_rate, ctx.cache_dir)
    return _CACHE


def _init_worker(ctx: Context) -> None:
    """Pool initializer: one thread per worker for torch (imported later, only if resampling is needed), and a
    staging folder of its own for its temporaries (removed by `run` once the workers have exited)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    start_staging(ctx.out)
    init(ctx)


def work(batch: list[Task]) -> list[Result]:
    """Worker entry for mixtures: errors of a task (unreadable source, bad spec, disk) become failed results."""
    results = []
    for split, name, fn, args in batch:
        try:
            results.append(fn(_CTX, _CACHE, *args))
        except (SourceError, ValueError) as err:
            results.append(Result(split, name, error=str(err)))
        except OSError as err:  # writing it: a full disk, permissions
            results.append(Result(split, name, error=f"cannot write ({os_reason(err)})"))
    return results


def collect(batch: list[Task]) -> list[Any]:
    """Worker entry for tasks that report their own problems in their result (source scans)."""
    return [fn(_CTX, _CACHE, *args) for _, _, fn, args in batch]


def run(ctx: Context, tasks: list[Task], jobs: int, on_result: Callable[[Any], None], entry=work) -> None:
    """Run `tasks` in batches through `entry` (`work` or `collect`) in `jobs` processes: this one, and `jobs - 1`
    spawned workers when there is more than one batch; calls `on_result` for each result in order of completion.

    The workers take batches from the front of the list and this process takes them from the back (a batch no
    worker has started is cancelled there and run here), so mixing starts at once, while the workers are still
    starting up (half a second each), and nobody waits at the end for a long tail.
    """
    batches = [tasks[i : i + BATCH] for i in range(0, len(tasks), BATCH)]
    with staging(ctx.out):  # every process creates its temporaries in a folder of its own (atomic.start_staging)
        init(ctx)
        if jobs <= 1 or len(batches) <= 1:
            for batch in batches:
                for r in entry(batch):
                    on_result(r)
            return
        try:
            _run_pool(ctx, batches, jobs, on_result, entry)
        finally:
            remove_stale(ctx.out)  # the workers' staging folders (they have exited)


def _run_pool(ctx: Context, batches: list[list[Task]], jobs: int, on_result: Callable[[Any], None], entry) -> None:
    """`run` with `jobs - 1` workers beside this process; returns once they have exited."""
    with contextlib.ExitStack() as stack:
        with quiet_children():  # the workers (started at submit) and multiprocessing's resource tracker
            pool = ProcessPoolExecutor(
                min(jobs, len(batches)) - 1, mp_context=get_context("spawn"), initializer=_init_worker, initargs=(ctx,)
            )
            ex = stack.enter_context(pool)
            futures = [ex.submit(entry, b) for b in batches]
        try:
            _share(futures, batches, entry, on_result)
        except BaseException:
            ex.shutdown(wait=True, cancel_futures=True)
            raise


def _share(futures: list[Future], batches: list[list[Task]], entry, on_result: Callable[[Any], None]) -> None:
    """Run batches here from the back of `batches` while the pool works through `futures` (the same batches,
    submitted) from the front, reporting the results of both as they come; returns once every batch is done."""
    finished: queue.SimpleQueue[Future] = queue.SimpleQueue()
    for fut in futures:
        fut.add_done_callback(finished.put)  # once per future: done in the pool, or cancelled below
    seen = 0

    def report(wait: bool) -> None:
        nonlocal seen
        while seen < len(futures) and (wait or not finished.empty()):
            fut = finished.get()
            seen += 1
            if not fut.cancelled():
                for r in fut.result():
                    on_result(r)

    for fut, batch in zip(reversed(futures), reversed(batches), strict=True):
        if not fut.cancel():  # a worker has it, and every batch before it
            break
        for r in entry(batch):
            on_result(r)
        report(wait=False)
    report(wait=True)


def environment_jobs() -> int:
    """A sensible default for --jobs: the CPUs this process may use."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
