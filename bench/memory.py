"""Peak RSS of `tse extract` on a 60-minute input against a 1-minute input (target: within 1.2x).

    .venv/bin/python bench/memory.py [--minutes 1 60] [--rate 48000] [--channels 1] [--workdir DIR]

Writes the inputs with soundfile in blocks (a quiet noise floor with tones, `--rate` Hz, PCM_16), saves a tiny
Waveformer checkpoint (random weights: memory does not depend on their values), and runs the real command
`tse extract IN -c Cough --checkpoint DIR -o OUT` once per input, each in its own subprocess that reports its
own peak resident set size (`ru_maxrss`). The default 48 kHz input takes the whole path: resampling to the
model's 44.1 kHz and back, streaming with carried state, atomic block writes. Prints a table with the ratio
(and the difference in MB) against the shortest input and writes bench/results/memory.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from common import machine, print_table, write_results

BLOCK_SECONDS = 10
TARGET_RATIO = 1.2
THREADS = 1  # torch threads of every process (the JSON's meta records this process's)


def write_input(path: Path, minutes: float, rate: int, channels: int) -> None:
    """`minutes` of noise plus a slow tone sweep, written block by block (never whole in memory)."""
    rng = np.random.default_rng(0)
    total, block = int(minutes * 60 * rate), BLOCK_SECONDS * rate
    with sf.SoundFile(str(path), "w", samplerate=rate, channels=channels, subtype="PCM_16") as f:
        for start in range(0, total, block):
            n = min(block, total - start)
            t = (start + np.arange(n)) / rate
            tone = 0.2 * np.sin(2 * np.pi * (300 + 50 * np.sin(t / 7)) * t)
            f.write((tone[:, None] + 0.02 * rng.standard_normal((n, channels))).astype(np.float32))


def make_checkpoint(directory: Path) -> Path:
    import torch

    from tse_cli.checkpoint import save_checkpoint
    from tse_cli.models import create

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    return save_checkpoint(create("waveformer-large", enc_dim=32, dec_dim=16, num_enc_layers=2), directory)


def child(report: Path, argv: list[str]) -> None:
    """Run `tse` in this process and write its exit code and peak RSS (bytes) to `report`."""
    import torch

    torch.set_num_threads(THREADS)
    from tse_cli.cli import app

    start = time.perf_counter()
    try:
        app(argv, standalone_mode=False)
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    report.write_text(json.dumps({"exit_code": code, "peak_rss": peak, "seconds": seconds}))


def measure(wav: Path, checkpoint: Path, out: Path) -> dict:
    report = out.with_suffix(".json")
    argv = ["extract", str(wav), "-c", "Cough", "--checkpoint", str(checkpoint), "-o", str(out), "--overwrite", "-q"]
    subprocess.run([sys.executable, __file__, "--child", str(report), *argv], check=True)
    result = json.loads(report.read_text())
    if result["exit_code"] != 0:
        raise SystemExit(f"tse extract failed on {wav} (exit {result['exit_code']})")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 60.0])
    parser.add_argument("--rate", type=int, default=48000, help="input sample rate (Hz)")
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None, help="where inputs/outputs go (default: a temp dir)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.child:
        child(args.child, rest)
        return

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        checkpoint = make_checkpoint(work / "tiny")
        rows = []
        for minutes in sorted(args.minutes):
            wav = work / f"in_{minutes:g}min.wav"
            write_input(wav, minutes, args.rate, args.channels)
            result = measure(wav, checkpoint, work / f"out_{minutes:g}min.wav")
            out_frames = sf.info(str(work / f"out_{minutes:g}min.wav")).frames
            assert out_frames == sf.info(str(wav)).frames, "output length differs from input"
            rows.append({"minutes": minutes, "input_bytes": wav.stat().st_size, **result})
            wav.unlink()
            (work / f"out_{minutes:g}min.wav").unlink()
    base = rows[0]["peak_rss"]
    for row in rows:
        row["ratio"] = row["peak_rss"] / base
        row["rtf"] = row["seconds"] / (row["minutes"] * 60)

    columns = ["input min", "file MB", "peak RSS MB", "+MB", "ratio", "wall s", "RTF"]
    table = [
        [f"{row['minutes']:g}", row["input_bytes"] / 2**20, row["peak_rss"] / 2**20]
        + [(row["peak_rss"] - base) / 2**20, row["ratio"], row["seconds"], row["rtf"]]
        for row in rows
    ]
    title = f"tse extract peak RSS ({args.rate} Hz, {args.channels} ch, PCM_16 in/out, tiny Waveformer"
    title += f", {THREADS} torch thread(s))"
    print_table(title, columns, table)
    worst = max(row["ratio"] for row in rows)
    print(f"worst ratio {worst:.3f} (target <= {TARGET_RATIO}): {'OK' if worst <= TARGET_RATIO else 'OVER'}")
    meta = machine() | {"rate": args.rate, "channels": args.channels, "target_ratio": TARGET_RATIO}
    write_results("memory", meta, rows)


if __name__ == "__main__":
    main()
