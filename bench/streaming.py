"""Streaming real-time factor (RTF = compute seconds / audio seconds) on one CPU thread, batch 1, 44.1 kHz.

    .venv/bin/python bench/streaming.py
    TSE_BENCH_WAVEFORMER_REPO=/path/to/Waveformer PYTHONPATH=/path/to/its/deps .venv/bin/python bench/streaming.py

Rows: waveformer-large/small and wavemamba-large/small fed in the published 416-sample chunks (13 frames of 32
samples, 9.4 ms), WaveMamba also in 128- and 32-sample chunks (2.9 ms, 0.7 ms), and the published Waveformer
(github.com/vb000/Waveformer, `src.training.dcc_tf.Net`) streamed the published way (480-sample windows, hop
416, its enc/dec/out buffers) with exactly our model's weights: the anchor. Rows `onnx`: the same model's step
exported by `tse export` (at that chunk size) and run in ONNX Runtime on one thread (`tse stream --engine onnx`),
when onnx and onnxruntime are installed. Random weights (speed does not
depend on the values). The published rows are skipped, with a note, when $TSE_BENCH_WAVEFORMER_REPO is unset.
Each round streams the same audio through every row in turn; the median over rounds is reported. Before
timing, every streamed output is checked against our offline forward (and the published stream against ours).
Allocations per chunk: tensor allocations (count and KiB, with `tse_cli.models.streaming.count_allocations`)
per streamed chunk in steady state, averaged over 26 chunks after 30 warm-up chunks (Waveformer at 32-sample
chunks decodes one group every 13 chunks, hence the fractions).
Prints a table and writes bench/results/streaming.json.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from importlib.util import find_spec

import torch
import torch.nn.functional as F
from common import Target, goal, median_times, published_anchor_args, published_waveformer, report

from tse_cli.models import create
from tse_cli.models.streaming import count_allocations

MODELS = ["waveformer-large", "waveformer-small", "wavemamba-large", "wavemamba-small"]
SAMPLE_RATE = 44100
WARM_UP, COUNTED = 30, 26  # chunks before counting allocations, chunks counted


def ours(model: torch.nn.Module, x: torch.Tensor, query: torch.Tensor, chunk: int) -> Callable[[], torch.Tensor]:
    """Stream x (1, 1, samples) through `model.streamer` in `chunk`-sample feeds, then flush."""

    def run() -> torch.Tensor:
        streamer = model.streamer(query)
        outs = [streamer.feed(piece) for piece in x.split(chunk, dim=-1)]
        return torch.cat([*outs, streamer.flush()], dim=-1)

    return run


def exported(model: torch.nn.Module, name: str, chunk: int, folder: str) -> torch.nn.Module:
    """`model`'s streaming step for `chunk`-sample chunks exported by `tse export`'s code, in ONNX Runtime on one
    thread (an `OnnxModel`: the same `streamer(query).feed/flush` as ours)."""
    from tse_cli.onnx_export import export_onnx
    from tse_cli.onnx_runtime import OnnxModel

    path = f"{folder}/{name}-{chunk}.onnx"
    export_onnx(model, path, chunk)
    return OnnxModel(path, threads=1)


def steady_allocations(step: Callable[[torch.Tensor], object], chunk: int) -> tuple[float, float]:
    """Allocations and KiB per call of `step(piece)` on COUNTED `chunk`-sample pieces, after WARM_UP of them."""
    pieces = (torch.randn(1, 1, chunk * (WARM_UP + COUNTED)) * 0.3).split(chunk, dim=-1)
    for piece in pieces[:WARM_UP]:
        step(piece)
    counted = count_allocations(lambda: [step(piece) for piece in pieces[WARM_UP:]])
    return counted.count / COUNTED, counted.bytes / 1024 / COUNTED


def published_step(net: torch.nn.Module, query: torch.Tensor, L: int) -> Callable[[torch.Tensor], object]:
    """The published Net's streaming step as `published` runs it: each chunk with its 2L samples of context."""
    buffers, window = net.init_buffers(1, query.device), torch.zeros(1, 1, 2 * L)

    @torch.inference_mode()
    def step(piece: torch.Tensor) -> torch.Tensor:
        nonlocal buffers, window
        window = torch.cat((window[..., -2 * L :], piece), dim=-1)
        out, *buffers = net(window, query, *buffers, pad=False)
        return out

    return step


def published(
    net: torch.nn.Module, x: torch.Tensor, query: torch.Tensor, L: int, chunk: int
) -> Callable[[], torch.Tensor]:
    """Stream x through the published Net its own way: windows of chunk + 2L samples, hop chunk, pad=False."""
    samples = x.shape[-1]
    padded = F.pad(x, (L, -samples % chunk + L))

    @torch.inference_mode()
    def run() -> torch.Tensor:
        buffers = net.init_buffers(1, x.device)
        outs = []
        for start in range(0, padded.shape[-1] - 2 * L, chunk):
            out, *buffers = net(padded[..., start : start + chunk + 2 * L], query, *buffers, pad=False)
            outs.append(out)
        return torch.cat(outs, dim=-1)[..., :samples]

    return run


def main() -> None:
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # the profiler's "gpuGetDeviceCount failed" line without a GPU
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--seconds", type=float, default=4.0, help="audio streamed per round (416-sample rows)")
    parser.add_argument(
        "--short-seconds", type=float, default=1.0, help="audio streamed per round, 128- and 32-sample rows"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds after one warm-up round (median)")
    args, net_class, why_not = published_anchor_args(parser, threads=1)()
    query = torch.eye(41)[:1]
    audio = {
        chunk: torch.randn(1, 1, round(s * SAMPLE_RATE / 416) * 416) * 0.3
        for chunk, s in ((416, args.seconds), (128, args.short_seconds), (32, args.short_seconds))
    }

    runs, rows = {}, []
    onnx_dir = tempfile.TemporaryDirectory() if find_spec("onnxruntime") and find_spec("onnx") else None
    if onnx_dir is None:
        print("onnx rows: not measured (pip install 'tse-cli[onnx]')")
    for name in args.models:
        model = create(name).eval()
        chunks = [416, 128, 32] if name.startswith("wavemamba") else [416]
        for chunk in chunks:
            x = audio[chunk]
            with torch.inference_mode():
                offline = model(x, query)
            key = (name, "tse", chunk)
            runs[key] = ours(model, x, query, chunk)
            row = {"model": name, "implementation": "tse", "chunk": chunk, "seconds": x.shape[-1] / SAMPLE_RATE}
            row["max_abs_diff_vs_offline"] = (runs[key]() - offline).abs().max().item()
            row["allocations_per_chunk"], row["kib_per_chunk"] = steady_allocations(model.streamer(query).feed, chunk)
            rows.append(row)
            if onnx_dir is not None:
                graph = exported(model, name, chunk, onnx_dir.name)
                key = (name, "onnx", chunk)
                runs[key] = ours(graph, x, query, chunk)
                row = {"model": name, "implementation": "onnx", "chunk": chunk, "seconds": row["seconds"]}
                row["max_abs_diff_vs_offline"] = (runs[key]() - offline).abs().max().item()
                row["allocations_per_chunk"] = row["kib_per_chunk"] = float("nan")  # not torch allocations
                rows.append(row)
            if name.startswith("waveformer") and net_class is not None:
                net = published_waveformer(model, net_class)
                key = (name, "published", chunk)
                runs[key] = published(net, x, query, model.L, chunk)
                with torch.inference_mode():
                    theirs_offline = net(x, query)
                row = {"model": name, "implementation": "published", "chunk": chunk, "seconds": row["seconds"]}
                row["max_abs_diff_vs_offline"] = (runs[key]() - offline).abs().max().item()
                row["published_offline_vs_tse_offline"] = (theirs_offline - offline).abs().max().item()
                counts = steady_allocations(published_step(net, query, model.L), chunk)
                row["allocations_per_chunk"], row["kib_per_chunk"] = counts
                rows.append(row)
    times = median_times(runs, args.repeats)

    for row in rows:
        key = (row["model"], row["implementation"], row["chunk"])
        row["rtf"], row["cpu_rtf"] = (times[key][kind] / row["seconds"] for kind in ("wall", "cpu"))
        row["latency_ms"] = 1000 * (row["chunk"] + 32) / SAMPLE_RATE
    rtf = {(r["model"], r["implementation"], r["chunk"]): r["rtf"] for r in rows}
    for row in rows:
        key = (row["model"], row["implementation"], row["chunk"])
        twin = (row["model"].replace("wavemamba", "waveformer"), "tse", 416)
        mamba = row["model"].startswith("wavemamba")
        row["vs_tse_waveformer"] = rtf[key] / rtf[twin] if mamba and twin in rtf else None
        anchor = (row["model"], "published", row["chunk"])
        row["vs_published"] = rtf[key] / rtf[anchor] if row["implementation"] != "published" and anchor in rtf else None

    columns = ["model", "impl", "chunk", "latency ms", "RTF", "CPU RTF", "vs our Waveformer", "vs published"]
    columns += ["max |stream - tse offline|", "allocs/chunk", "KiB/chunk"]
    table = [
        [r["model"], r["implementation"], r["chunk"], r["latency_ms"], r["rtf"], r["cpu_rtf"]]
        + [r["vs_tse_waveformer"], r["vs_published"], f"{r['max_abs_diff_vs_offline']:.1e}"]
        + [f"{r['allocations_per_chunk']:.1f}", f"{r['kib_per_chunk']:.1f}"]
        for r in rows
    ]
    title = (
        f"Streaming real-time factor, batch 1, {args.threads} thread(s), median of {args.repeats} rounds "
        "(RTF: wall seconds per audio second; ratios of RTFs, < 1: the row is faster)"
    )
    report("streaming", title, columns, table, rows, args.repeats, why_not, targets(rows, rtf))


def targets(rows: list[dict], rtf: dict[tuple[str, str, int], float]) -> list[Target]:
    """Issue 16's streaming targets for wavemamba-large (one thread), None where a row was not run."""
    mamba = {chunk: rtf.get(("wavemamba-large", "tse", chunk)) for chunk in (416, 128, 32)}
    anchor = rtf.get(("waveformer-large", "published", 416))
    speedup = anchor / mamba[416] if anchor and mamba[416] else None
    errors = [r["max_abs_diff_vs_offline"] for r in rows if r["model"] == "wavemamba-large"]
    error = max(errors) if errors else None
    return [
        goal("wavemamba-large 416: x faster than published", speedup, ">= 5", lambda v: v >= 5),
        goal("wavemamba-large 128: RTF", mamba[128], "< 1", lambda v: v < 1),
        goal("wavemamba-large 32: RTF", mamba[32], "< 2", lambda v: v < 2),
        goal("wavemamba-large: max |stream - offline|", error, "<= 1e-5", lambda v: v <= 1e-5),
    ]


if __name__ == "__main__":
    main()
