"""The worker side of `tse mix`: batches shared between this process and its spawned workers."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tse_cli import atomic
from tse_cli.data import workers
from tse_cli.data.recipes import DPM_TSE


def _whose(ctx: workers.Context, cache, index: int) -> tuple[int, int, Path]:
    """A task that reports which process ran it, and where that process creates its temporaries. It takes 10 ms,
    so that the pool's manager thread surely gets its turn to hand the first batches to the worker meanwhile."""
    time.sleep(0.01)
    return index, os.getpid(), atomic.create_temp(ctx.out / f"{index}.wav").parent


def test_this_process_mixes_beside_its_workers(tmp_path: Path) -> None:
    """jobs=2 is this process and one worker: every task runs once, some here (from the back of the list, while
    the worker starts up), the rest in the worker (which takes the front)."""
    ctx = workers.Context(DPM_TSE, tmp_path, 0, False, False, None, 16000)
    tasks = [("train", f"train_{i + 1}", _whose, (i,)) for i in range(5 * workers.BATCH)]
    results: list[tuple[int, int, Path]] = []
    workers.run(ctx, tasks, 2, results.append, entry=workers.collect)
    assert sorted(i for i, _, _ in results) == list(range(len(tasks)))
    here = {i for i, pid, _ in results if pid == os.getpid()}
    assert here and max(here) == len(tasks) - 1 and 0 not in here
    folders = {pid: folder for _, pid, folder in results}
    assert len(folders) == 2, "two processes, each with one staging folder"
    assert all(f.parent == tmp_path and atomic.temp_owner(f.name) == pid for pid, f in folders.items()), folders
    assert list(tmp_path.iterdir()) == [], "staging folders (and what was left in them) removed"
