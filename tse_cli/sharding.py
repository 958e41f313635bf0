"""Splitting one `tse extract` run over processes: `--shard K/N` for job arrays, or the ranks of `torchrun`.

Every process plans the whole run (so output clashes are found the same way everywhere), then keeps the tasks
its shard owns. The split depends on the inputs alone, never on which outputs already exist, so every rank of
a run, and every rerun of an interrupted one, agrees on it: inputs are balanced by audio duration (longest first,
each to the least-loaded shard; ties by input order and shard number). Under torchrun (`WORLD_SIZE` > 1) the
ranks also meet at the end over a gloo group: rank 0 prints the other ranks' JSON lines and the merged summary,
and every rank exits 1 if an input failed anywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tse_cli.engine.records import Task

# Rank 0 waits for the slowest rank at the end: long jobs must not hit gloo's default 30-minute timeout.
MEET_TIMEOUT = timedelta(days=7)


@dataclass(frozen=True)
class Shard:
    """Shard `index` (0-based) of `count`; `distributed` when the shards are torchrun's ranks."""

    index: int
    count: int
    distributed: bool = False

    def __str__(self) -> str:
        return f"{self.index + 1}/{self.count}"


def parse(text: str) -> Shard:
    """`K/N` (1 <= K <= N, 1-based as in SLURM arrays' usual numbering) -> Shard; ValueError otherwise."""
    index, slash, count = text.partition("/")
    if not (slash and index.strip().isdigit() and count.strip().isdigit()):
        raise ValueError(f"--shard must be K/N (e.g. 1/4), not {text!r}")
    k, n = int(index), int(count)
    if not 1 <= k <= n:
        raise ValueError(f"--shard {text}: K must be between 1 and N")
    return Shard(k - 1, n)


def from_torchrun() -> Shard | None:
    """The shard of this torchrun rank (RANK of WORLD_SIZE), or None when not launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    return Shard(int(os.environ["RANK"]), world, distributed=True)


def local_device(spec: str) -> str:
    """Under torchrun, `auto`/`cuda` mean this rank's GPU (`cuda:LOCAL_RANK`) when CUDA is there; else `spec`."""
    if spec.strip().lower() not in ("auto", "cuda") or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return spec
    import torch

    if not torch.cuda.is_available():
        return "cpu" if spec.strip().lower() == "auto" else spec
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count()}"


def assign(weights: list[float], count: int) -> list[int]:
    """The shard of each item: longest first onto the least-loaded shard (ties: earlier item, lower shard)."""
    loads = [0.0] * count
    owner = [0] * len(weights)
    for item in sorted(range(len(weights)), key=lambda i: (-weights[i], i)):
        shard = min(range(count), key=lambda s: (loads[s], s))
        owner[item] = shard
        loads[shard] += weights[item]
    return owner


def _seconds(task: Task) -> float:
    """An input's duration from its header (kept on the task for the engine); 0 when it cannot be read (it then
    fails on whichever shard owns it)."""
    try:
        return task.header().seconds
    except Exception:  # an unreadable input still belongs to exactly one shard
        return 0.0


def select(tasks: list[Task], shard: Shard) -> list[Task]:
    """The tasks `shard` owns, in their planned order."""
    owner = assign([_seconds(task) for task in tasks], shard.count)
    return [task for task, s in zip(tasks, owner, strict=True) if s == shard.index]


class Meeting:
    """The end-of-run exchange between torchrun's ranks over a gloo process group (CPU, whatever the device)."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self.dist = dist
        if not dist.is_initialized():
            dist.init_process_group("gloo", timeout=MEET_TIMEOUT)
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def gather(self, mine: Any) -> list[Any]:
        """Every rank's `mine` (picklable), in rank order, on every rank."""
        everyone: list[Any] = [None] * self.world
        self.dist.all_gather_object(everyone, mine)
        return everyone

    def close(self) -> None:
        """Leave the group."""
        self.dist.destroy_process_group()
