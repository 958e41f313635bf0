"""`tse stream` end to end through pipes, in real time, on one thread: RTF and input-to-output delay per block.

    .venv/bin/python bench/stream.py [--seconds 10] [--chunks 416 128] [--models waveformer-large wavemamba-large demo]

Per model and chunk size, the real command `python -m tse_cli stream --checkpoint DIR -c Bark --raw --rate
44100 --format raw --out-dtype float32 --chunk C` runs in a subprocess with OMP_NUM_THREADS=1. This process
plays a capture device: after one untimed second (start-up, warm-up), it writes each block of C samples at the
moment its last sample would have been captured, `--seconds` long, and a reader thread timestamps every byte
that comes back.

The delay of input block k is measured for its first sample s: the time its output was read minus the time
sample s was captured (block k's write time minus (C - 1) / rate). The theoretical delay of that sample is
how long the model itself must wait: (end of the first block after which the streamer has emitted output s)
- s - 1 samples, found by feeding the same chunks to the model's streamer in this process; it is one chunk
plus the model's lookahead at most (`(C + latency_samples - 1) / rate`, the bound column). Measured minus
theoretical is the compute time and the pipe overhead. RTF: the subprocess's CPU seconds (user + system, from
/proc) over the timed audio seconds; on one thread, below 1 is real time. Baseline, in this process on one
thread: "model RTF", the CPU RTF of the model's streamer alone fed the same chunks (no pipes, no
decoding), so RTF - model RTF is what `tse stream` adds around the model. "late" counts blocks whose delay
exceeds the theoretical one by more than a chunk (compute fell behind real time).

Models: architecture names at their published size with random weights (speed does not depend on the values),
or registry models with their weights (`demo`, the small packaged WaveMamba, needs no download).
Columns: bound, theory (mean, max), delay (mean, p95, max) and overhead (delay - theory, mean) in ms; RTF and
model RTF (the streamer alone, in this process); late: blocks more than a chunk later than the theory.

Prints a table and writes bench/results/stream.json.
"""

from __future__ import annotations

import argparse
import bisect
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from common import machine, print_table, write_results

ROOT = Path(__file__).resolve().parents[1]
RATE = 44100
WARM_UP_SECONDS = 1.0
OUT_BYTES = 4  # float32 mono output


class Reader(threading.Thread):
    """Reads a pipe to its end, logging (bytes so far, time) after every read."""

    def __init__(self, pipe) -> None:
        super().__init__(daemon=True)
        self.pipe = pipe
        self.ends: list[int] = []
        self.times: list[float] = []

    def run(self) -> None:
        total = 0
        while data := self.pipe.read1(1 << 16):
            total += len(data)
            self.ends.append(total)
            self.times.append(time.perf_counter())

    def samples(self) -> int:
        return self.ends[-1] // OUT_BYTES if self.ends else 0

    def arrival(self, sample: int) -> float:
        """When output sample `sample` was read."""
        return self.times[bisect.bisect_right(self.ends, sample * OUT_BYTES)]


def emissions(model, audio: np.ndarray, chunk: int) -> tuple[list[int], float]:
    """Feed `audio` (samples,) to the model's streamer in this process, in `chunk`-sample pieces: the output
    samples emitted after each piece (cumulative), and the streamer's CPU RTF (the in-process baseline)."""
    import torch

    streamer, total, out = model.streamer(torch.eye(41)[2:3]), 0, []
    cpu = time.process_time()
    for piece in torch.from_numpy(audio)[None, None].split(chunk, dim=-1):
        total += streamer.feed(piece).shape[-1]
        out.append(total)
    return out, (time.process_time() - cpu) / (len(audio) / RATE)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(checkpoint: Path, model, chunk: int, seconds: float, threads: int) -> dict:
    """One real-time run of `tse stream`; returns the row."""
    warm_chunks = int(np.ceil(WARM_UP_SECONDS * RATE / chunk))
    timed_chunks = int(seconds * RATE / chunk)
    total_chunks = warm_chunks + timed_chunks
    pcm = (0.1 * np.random.default_rng(0).standard_normal(total_chunks * chunk) * 32767).astype("<i2")
    audio = pcm.tobytes()
    emitted, streamer_rtf = emissions(model, pcm.astype(np.float32) / 32768, chunk)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "tse_cli", "stream", "--checkpoint", str(checkpoint), "-c", "Bark", "--raw"]
    command += ["--rate", str(RATE), "--format", "raw", "--out-dtype", "float32", "--chunk", str(chunk)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=ROOT)
    reader = Reader(process.stdout)
    reader.start()
    try:
        warm = warm_chunks * chunk
        process.stdin.write(audio[: 2 * warm])
        process.stdin.flush()
        while reader.samples() < emitted[warm_chunks - 1]:  # started, warmed up, caught up
            if process.poll() is not None:
                raise RuntimeError(f"tse stream exited with {process.returncode}")
            time.sleep(0.005)
        cpu_start, t0 = cpu_seconds(process.pid), time.perf_counter()
        written = []  # write time of each timed block
        for k in range(timed_chunks):
            due = t0 + (k + 1) * chunk / RATE  # its last sample has just been captured
            time.sleep(max(0.0, due - time.perf_counter()))
            start = 2 * (warm + k * chunk)
            process.stdin.write(audio[start : start + 2 * chunk])
            process.stdin.flush()
            written.append(time.perf_counter())
        while reader.samples() < emitted[-1]:
            time.sleep(0.005)
        cpu = cpu_seconds(process.pid) - cpu_start
        process.stdin.close()
        if process.wait(60) != 0:
            raise RuntimeError(f"tse stream exited with {process.returncode}")
        reader.join(60)
    finally:
        process.kill()
    measured, theoretical, late = [], [], 0
    for k in range(timed_chunks):
        s = warm + k * chunk  # the block's first sample
        after = bisect.bisect_right(emitted, s)  # the first chunk after which output s exists
        if after >= total_chunks:
            continue  # emitted only by the flush at the end
        expected = ((after + 1) * chunk - s - 1) / RATE
        delay = reader.arrival(s) - (written[k] - (chunk - 1) / RATE)
        measured.append(delay)
        theoretical.append(expected)
        late += delay > expected + chunk / RATE
    ms = [1e3 * d for d in measured]
    return {
        "chunk": chunk,
        "chunk_ms": 1e3 * chunk / RATE,
        "bound_ms": 1e3 * (chunk + model.latency_samples - 1) / RATE,
        "theoretical_mean_ms": 1e3 * statistics.mean(theoretical),
        "theoretical_max_ms": 1e3 * max(theoretical),
        "measured_mean_ms": statistics.mean(ms),
        "measured_p95_ms": float(np.percentile(ms, 95)),
        "measured_max_ms": max(ms),
        "overhead_mean_ms": statistics.mean(ms) - 1e3 * statistics.mean(theoretical),
        "rtf": cpu / (timed_chunks * chunk / RATE),
        "streamer_rtf": streamer_rtf,
        "blocks": len(measured),
        "late": late,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="Timed audio per row (after 1 s of warm-up).")
    parser.add_argument("--chunks", type=int, nargs="+", default=[416, 128])
    parser.add_argument(
        "--models",
        nargs="+",
        default=["waveformer-large", "wavemamba-large", "demo"],
        help="Architecture names (published size, random weights) or registry models (their weights).",
    )
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of `tse stream`.")
    args = parser.parse_args()

    import torch

    from tse_cli.checkpoint import save_checkpoint
    from tse_cli.models import ARCHITECTURES, create
    from tse_cli.weights import load_model

    torch.set_num_threads(1)
    rows, table = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            torch.manual_seed(0)
            model = (create(name) if name in ARCHITECTURES else load_model(name)).eval()
            checkpoint = save_checkpoint(model, Path(tmp) / name)
            for chunk in args.chunks:
                row = {"model": name, **measure(checkpoint, model, chunk, args.seconds, args.threads)}
                rows.append(row)
                table.append(
                    [name, chunk, row["bound_ms"], row["theoretical_mean_ms"],
                     row["theoretical_max_ms"], row["measured_mean_ms"], row["measured_p95_ms"],
                     row["measured_max_ms"], row["overhead_mean_ms"], row["rtf"], row["streamer_rtf"],
                     f"{row['late']}/{row['blocks']}"]
                )  # fmt: skip
    columns = ["model", "chunk", "bound", "theory", "theory max", "delay", "delay p95", "delay max", "overhead",
               "RTF", "model RTF", "late"]  # fmt: skip
    title = f"tse stream through pipes in real time, {args.threads} thread(s): delays in ms (means unless noted)"
    print_table(title, columns, table)
    write_results("stream", machine() | {"seconds": args.seconds, "stream_threads": args.threads}, rows)


if __name__ == "__main__":
    main()
