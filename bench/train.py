"""Training speed: optimizer steps per second of `tse train`'s step, on the CPU and on CUDA when available.

Each row times the loop's own `train_step` (forward, the paper loss, backward, clipping at 0.5, Adam) on
random in-memory batches, so data loading is not measured. CPU rows use a short default crop (the published
6 s x 16 batch takes minutes per step on a laptop CPU); the CUDA rows use the paper's batch 16 x 6 s in
bfloat16 autocast, as `tse train` runs there.

    python bench/train.py [--arch wavemamba-small --arch waveformer-small] [--threads 2]

Prints a table and writes bench/results/train.json.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
from common import machine, print_table, write_results

from tse_cli.models import create
from tse_cli.train.loop import train_step
from tse_cli.train.tasks import get_task


def measure(arch: str, device: str, batch: int, seconds: float, steps: int, warmup: int) -> dict:
    """Steps per second (and audio seconds per second) of `steps` timed training steps after `warmup`."""
    torch.manual_seed(0)
    model = create(arch).to(device)
    task = get_task(arch)
    samples = round(seconds * model.sample_rate)
    clue = torch.zeros(batch, 41, device=device)
    clue[torch.arange(batch), torch.arange(batch) % 41] = 1
    data = {
        "mixture": 0.1 * torch.randn(batch, 1, samples, device=device),
        "target": 0.1 * torch.randn(batch, 1, samples, device=device),
        "clue": clue,
    }
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    cuda = device.startswith("cuda")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    for i in range(warmup + steps):
        if i == warmup:
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
        train_step(model, task, data, task.options, optimizer, 0.5, autocast)
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return {
        "arch": arch,
        "device": device,
        "batch": batch,
        "seconds": seconds,
        "steps_per_s": steps / elapsed,
        "audio_s_per_s": steps * batch * seconds / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", action="append", help="architectures (default: wavemamba-small, waveformer-small)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--cpu-batch", type=int, default=2)
    parser.add_argument("--cpu-seconds", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    archs = args.arch or ["wavemamba-small", "waveformer-small"]
    rows = [measure(arch, "cpu", args.cpu_batch, args.cpu_seconds, args.steps, 1) for arch in archs]
    if torch.cuda.is_available():
        rows += [measure(arch, "cuda", 16, 6.0, 10 * args.steps, 3) for arch in archs]
    else:
        rows += [{"arch": arch, "device": "cuda", "note": "not measured (no CUDA GPU)"} for arch in archs]
    meta = machine()
    print_table(
        f"tse train step speed ({meta['cpu']}, {args.threads} threads)",
        ["arch", "device", "batch x seconds", "steps/s", "audio s/s", "status"],
        [
            [row["arch"], row["device"], f"{row['batch']} x {row['seconds']:g}" if "batch" in row else None]
            + [row.get("steps_per_s"), row.get("audio_s_per_s"), row.get("note", "measured")]
            for row in rows
        ],
    )
    write_results("train", meta, rows)


if __name__ == "__main__":
    main()
