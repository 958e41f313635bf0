"""Offline extraction speed (x real time = audio seconds per wall second) for a 60 s file, 2 CPU threads.

    .venv/bin/python bench/offline.py
    TSE_BENCH_WAVEFORMER_REPO=/path/to/Waveformer PYTHONPATH=/path/to/its/deps .venv/bin/python bench/offline.py

Our rows go through the extraction engine (`tse_cli.engine.Engine`, what `tse extract` runs after loading the
model): a 60 s 44.1 kHz 16-bit WAV in a temporary folder is read in blocks, streamed through the model in
65,536-sample blocks (the default --block-size) and written out. Model loading and CLI start-up are not timed.
The published Waveformer (the anchor, with exactly our weights) runs its own offline forward on the whole
signal, tensors only: no file I/O, which favours it. Random weights (speed does not depend on the values).
Window models (dpm-tse, av-*) can be added with --models; they are slow on CPU and not in the default set.
Prints a table and writes bench/results/offline.json.

"GMAC/s" is the arithmetic each row gets done: the model's multiply-adds for the file
(`tse_cli.models.complexity`; the published forward is counted as our Waveformer of its size) over its wall time.
The products are most of that arithmetic, so against what a 512 x 512 product of 2048 rows runs at on the same
machine (docs/performance.md) it says how much room is left.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from common import goal, median_times, published_anchor_args, published_waveformer, report

from tse_cli.engine import Engine, Task
from tse_cli.models import create
from tse_cli.models.complexity import count

MODELS = ["waveformer-large", "waveformer-small", "wavemamba-large", "wavemamba-small"]


def engine_run(model: torch.nn.Module, task: Task) -> Callable[[], None]:
    """Extract `task` with a fresh engine around `model` (CPU, float32, default block size, one file)."""

    def run() -> None:
        (result,) = Engine(model, "cpu", jobs=2).run([task])
        if result.status != "done":
            raise RuntimeError(f"{task.input}: {result.error}")

    return run


def published_forward(net: torch.nn.Module, x: torch.Tensor, query: torch.Tensor) -> Callable[[], None]:
    """The published Net's offline forward on the whole signal (1, 1, samples)."""

    @torch.inference_mode()
    def run() -> None:
        net(x, query)

    return run


def make_task(model: torch.nn.Module, folder: Path, seconds: float, seed: int = 0) -> Task:
    """A random `seconds`-long input at the model's rate (and a random lip-embedding file for visual models)."""
    rng = np.random.default_rng(seed)
    rate = int(model.sample_rate)
    wav = folder / f"mix_{rate}.wav"
    if not wav.exists():
        sf.write(wav, (0.3 * rng.standard_normal(round(seconds * rate))).clip(-1, 1), rate, subtype="PCM_16")
    task = Task(wav, folder / f"out_{getattr(model, 'arch', 'model')}.wav")
    if model.clue_kind == "visual":
        task.visual = folder / "lips.npy"
        np.save(task.visual, rng.standard_normal((round(seconds * model.clue_rate), 512)).astype(np.float32))
    else:
        task.clue = np.eye(41, dtype=np.float32)[0]
    return task


def twin(name: str) -> str:
    """The Waveformer of the same size as `name` (itself for a Waveformer): its published forward is the anchor."""
    return name.replace("wavemamba", "waveformer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the input file")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (median); a 1 s warm-up precedes them")
    args, net_class, why_not = published_anchor_args(parser, threads=2)()

    # the published forward of each Waveformer size that a row compares with (wavemamba-X: waveformer-X)
    anchors = {twin(name) for name in args.models if twin(name) in MODELS} if net_class is not None else set()
    runs, rows = {}, []
    with tempfile.TemporaryDirectory(prefix="tse-bench-") as tmp:
        folder = Path(tmp)
        (folder / "warmup").mkdir()
        models = {name: create(name).eval() for name in dict.fromkeys([*args.models, *sorted(anchors)])}
        for name in args.models:
            model = models[name]
            engine_run(model, make_task(model, folder / "warmup", 1.0))()  # first-call costs, untimed
            runs[(name, "tse engine")] = engine_run(model, make_task(model, folder, args.seconds))
            rows.append({"model": name, "implementation": "tse engine"})
        for name in sorted(anchors):  # with exactly our model's weights
            net = published_waveformer(models[name], net_class)
            task = make_task(models[name], folder, args.seconds)
            x = torch.from_numpy(sf.read(task.input, dtype="float32")[0])[None, None]
            runs[(name, "published forward")] = published_forward(net, x, torch.from_numpy(task.clue)[None])
            rows.append({"model": name, "implementation": "published forward"})
        times = median_times(runs, args.repeats, warmup=False)
        macs = {name: count(model, args.seconds)["macs"] for name, model in models.items()}

    for row in rows:
        key = (row["model"], row["implementation"])
        row["seconds"] = args.seconds
        row["x_realtime"] = args.seconds / times[key]["wall"]
        row["cpu_seconds_per_audio_second"] = times[key]["cpu"] / args.seconds
        ours = (twin(row["model"]), "tse engine")
        if row["model"].startswith("wavemamba") and ours in times:
            row["speedup_vs_tse_waveformer"] = times[ours]["wall"] / times[key]["wall"]
        anchor = (twin(row["model"]), "published forward")
        if row["implementation"] == "tse engine" and anchor in times:
            row["speedup_vs_published"] = times[anchor]["wall"] / times[key]["wall"]
        row["gmacs_per_second"] = macs[row["model"]] / times[key]["wall"] / 1e9
    columns = ["model", "implementation", "x real time", "CPU s / audio s", "vs our Waveformer", "vs published"]
    columns += ["GMAC/s"]
    table = [
        [r["model"], r["implementation"], r["x_realtime"], r["cpu_seconds_per_audio_second"]]
        + [r.get(k) for k in ("speedup_vs_tse_waveformer", "speedup_vs_published", "gmacs_per_second")]
        for r in rows
    ]
    title = (
        f"Offline extraction of a {args.seconds:g} s file, {args.threads} threads, median of {args.repeats} rounds "
        "(x real time: audio seconds per wall second, higher is faster; vs: speed-up over our Waveformer of the "
        "same size / over the published Waveformer forward of that size; GMAC/s: the model's multiply-adds per wall "
        "second)"
    )
    row = next((r for r in rows if (r["model"], r["implementation"]) == ("wavemamba-large", "tse engine")), {})
    ours, published = row.get("speedup_vs_tse_waveformer"), row.get("speedup_vs_published")
    goals = [
        goal("wavemamba-large: x our waveformer-large", ours, ">= 1.2", lambda v: v >= 1.2),
        goal("wavemamba-large: x published forward", published, ">= 6", lambda v: v >= 6),
    ]
    report("offline", title, columns, table, rows, args.repeats, why_not, goals)


if __name__ == "__main__":
    main()
