"""Sharded extraction on CPU: one `tse extract` process against two (`--shard 1/2` + `2/2` side by side, and two
torchrun ranks), on the same folder: wall seconds, speed-up, and whether the outputs are byte-identical.

    .venv/bin/python bench/shard.py [--files 16] [--seconds 6] [--model wavemamba-small] [--repeats 2]

Each process gets one intra-op thread (OMP_NUM_THREADS=1), so two processes use the 2 cores a single one
leaves idle on its own; the single run gets 2 threads, as `tse extract` would by default. Whole commands are
timed (start-up and model loading included, which favours the single process). Random weights, random audio.
Prints a table and writes bench/results/shard.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from common import machine, print_table, write_results

from tse_cli.checkpoint import save_checkpoint
from tse_cli.models import create

TSE = [sys.executable, "-m", "tse_cli", "extract"]


def tree(folder: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under `folder`."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def timed(commands: list[list[str]], threads: int) -> float:
    """Wall seconds for `commands` run side by side (each must exit 0)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in commands]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode:
            raise RuntimeError(err.decode()[-2000:])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--model", default="wavemamba-small")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tse-bench-shard-"))
    torch.manual_seed(0)
    checkpoint = save_checkpoint(create(args.model), work / "model")
    rng = np.random.default_rng(0)
    (work / "in").mkdir()
    for i in range(args.files):
        frames = int(44100 * args.seconds * rng.uniform(0.5, 1.5))
        audio = rng.uniform(-0.5, 0.5, frames).astype(np.float32)
        sf.write(work / "in" / f"{i:03d}.wav", audio, 44100, subtype="PCM_16")
    base = ["-r", "--checkpoint", str(checkpoint), "-c", "Cough", "--device", "cpu", "-q"]
    ways = {
        "one process, 2 threads": lambda out: timed([[*TSE, str(work / "in"), "-O", str(out), *base]], 2),
        "--shard 1/2 + 2/2, 1 thread each": lambda out: timed(
            [[*TSE, str(work / "in"), "-O", str(out), *base, "--shard", k] for k in ("1/2", "2/2")], 1
        ),
        "torchrun, 2 ranks, 1 thread each": lambda out: timed(
            [
                [
                    sys.executable,
                    "-m",
                    "torch.distributed.run",
                    "--standalone",
                    "--nproc-per-node",
                    "2",
                    "-m",
                    "tse_cli",
                    "extract",
                    str(work / "in"),
                    "-O",
                    str(out),
                    *base,
                ]
            ],
            1,
        ),
    }
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    trees: dict[str, dict[str, bytes]] = {}
    for r in range(args.repeats):
        for name, way in ways.items():
            out = work / f"out-{r}-{list(ways).index(name)}"
            seconds[name].append(way(out))
            trees[name] = tree(out)
    audio = sum(sf.info(str(p)).duration for p in (work / "in").iterdir())
    reference = trees["one process, 2 threads"]
    baseline = float(np.median(seconds["one process, 2 threads"]))
    rows = []
    for name, times in seconds.items():
        wall = float(np.median(times))
        rows.append(
            {
                "way": name,
                "wall_s": wall,
                "x_real_time": audio / wall,
                "speedup": baseline / wall,
                "identical": trees[name] == reference,
            }
        )
    print_table(
        f"{args.files} files, {audio:.0f} s of audio, {args.model} (median of {args.repeats})",
        ["way", "wall s", "x real time", "speed-up", "identical outputs"],
        [[r["way"], r["wall_s"], r["x_real_time"], r["speedup"], r["identical"]] for r in rows],
    )
    write_results("shard", machine() | {"repeats": args.repeats, "model": args.model}, rows)


if __name__ == "__main__":
    main()
