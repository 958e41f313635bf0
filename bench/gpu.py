"""CUDA rows: batch extraction throughput, reference scan vs fused kernels, and kernel parity (needs a CUDA GPU).

    .venv/bin/python bench/gpu.py                       # everything, on cuda:0
    .venv/bin/python bench/gpu.py --files 100 --batch-size 32 --models wavemamba-large

Fused kernels: `cuda` (mamba_ssm's, when installed) and `triton` (the project's, tse_cli/models/ssm/triton_kernels.py,
when Triton imports); each one available is measured against the pure-PyTorch `reference` scan.

1. Throughput: `tse extract` (the real CLI, one process per row) over --files six-second 44.1 kHz WAVs with
   --batch-size, random weights saved as a checkpoint directory; reported as audio hours per wall minute and
   x real time, including process start-up and model loading. WaveMamba runs once per scan backend
   (TSE_SCAN_BACKEND=reference, cuda, triton); the Waveformer with `auto` (it has no scan).
2. Scan speed: the selective scan alone at WaveMamba-large's width (d_inner 512, d_state 16), reference vs
   each fused kernel, float32 and bfloat16, forward and forward+backward (median of --repeats, synchronised).
3. Parity: the same inputs through each fused kernel and the reference: max |difference| of the output and of
   every gradient (inputs and parameters), relative to the reference's largest magnitude.
4. Compile report (runs without a GPU): registers and spills of the Triton kernels compiled for sm_90 (H100).

Without a CUDA GPU sections 1-3 are printed and stored as "not measured (no CUDA GPU)". Prints tables and
writes bench/results/gpu.json.
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
from common import machine, median_times, print_table, write_results
from scan import make_inputs, runner

from tse_cli.checkpoint import save_checkpoint
from tse_cli.classes import FSD_CLASSES
from tse_cli.models import create
from tse_cli.models.ssm import mamba_ssm_available, selective_scan, triton_available

FILE_SECONDS = 6.0
SAMPLE_RATE = 44100
GRAD_INPUTS = ("u", "delta", "B", "C", "z")
PARAMETERS = ("A", "D", "delta_bias")


def write_inputs(folder: Path, files: int) -> None:
    """`files` random six-second 16-bit mono WAVs (each its own noise) in `folder`."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(files):
        audio = (0.3 * rng.standard_normal(round(FILE_SECONDS * SAMPLE_RATE))).clip(-1, 1)
        sf.write(folder / f"{i:05d}.wav", audio, SAMPLE_RATE, subtype="PCM_16")


def throughput(name: str, inputs: Path, work: Path, files: int, batch_size: int, backend: str) -> dict:
    """One `tse extract` run over the folder; wall seconds -> audio hours per minute."""
    checkpoint = work / f"ckpt-{name}"
    if not checkpoint.exists():
        save_checkpoint(create(name), checkpoint)
    out = work / f"out-{name}-{backend}"
    command = [sys.executable, "-m", "tse_cli", "extract", str(inputs), "--checkpoint", str(checkpoint)]
    command += ["--class", FSD_CLASSES[0], "-O", str(out), "--batch-size", str(batch_size), "--device", "cuda"]
    command += ["--overwrite", "-q"]
    env = os.environ | ({"TSE_SCAN_BACKEND": backend} if backend != "auto" else {})
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    row = {"model": name, "scan_backend": backend, "files": files, "batch_size": batch_size, "wall_s": wall}
    if done.returncode:
        return row | {"status": f"failed (exit {done.returncode}): {done.stderr.strip()[-300:]}"}
    audio_s = files * FILE_SECONDS
    return row | {
        "status": "measured",
        "x_realtime": audio_s / wall,
        "audio_hours_per_minute": audio_s / 3600 / (wall / 60),
    }


def scan_speed(kernels: list[str], batch: int, length: int, dtype: torch.dtype, grad: bool, repeats: int) -> dict:
    """Reference vs each fused kernel on one input set (seconds, medians)."""
    inputs = make_inputs(batch, 512, 16, length, "cuda", dtype)
    backends = ["reference", *kernels]
    times = median_times({b: runner(inputs, b, grad) for b in backends}, repeats, torch.cuda.synchronize)
    row = {"dtype": str(dtype).removeprefix("torch."), "pass": "fwd+bwd" if grad else "fwd", "batch": batch}
    row |= {"length": length} | {f"{b}_s": times[b]["wall"] for b in backends}
    return row | {f"{k}_speedup": row["reference_s"] / row[f"{k}_s"] for k in kernels} | {"status": "measured"}


def parity(kernel: str, dtype: torch.dtype, batch: int, length: int) -> dict:
    """Max |kernel - reference| of y and of every gradient, relative to the reference's max |value|."""
    inputs = make_inputs(batch, 512, 16, length, "cuda", dtype)
    results = {}
    for backend in ("reference", kernel):
        leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
        y = selective_scan(**leaves, delta_softplus=True, backend=backend)
        y.float().square().mean().backward()
        results[backend] = {"y": y.detach().float()} | {k: leaves[k].grad.float() for k in GRAD_INPUTS + PARAMETERS}
    row = {"kernel": kernel, "dtype": str(dtype).removeprefix("torch."), "batch": batch, "length": length}
    for key, ref in results["reference"].items():
        row[f"{key}_rel_err"] = ((results[kernel][key] - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()
    return row | {"status": "measured"}


def compile_rows() -> list[dict]:
    """The Triton kernels compiled for sm_90 (no GPU needed): registers and spill bytes per kernel and dtype."""
    if not triton_available():
        return [{"status": "not measured (Triton does not import)"}]
    from tse_cli.models.ssm.triton_kernels import compile_report

    return [row | {"status": "measured"} for row in compile_report(90)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["wavemamba-large", "waveformer-large"])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    meta = machine()
    sections: dict[str, list[dict]] = {"throughput": [], "scan": [], "parity": [], "compile": compile_rows()}
    print_table(
        "Triton scan kernels compiled for sm_90 (ptxas -v; no GPU needed)",
        ["kernel", "dtype", "warps", "registers", "spill bytes", "status"],
        [
            [r.get(k) for k in ("kernel", "dtype", "num_warps", "registers", "spill_bytes", "status")]
            for r in sections["compile"]
        ],
    )
    if not torch.cuda.is_available():
        for name in ("throughput", "scan", "parity"):
            sections[name].append({"status": "not measured (no CUDA GPU)"})
        print("GPU rows: not measured (no CUDA GPU)")
        write_results("gpu", meta, [{"section": k, **row} for k, rows in sections.items() for row in rows])
        return
    kernels = [k for k, ok in (("cuda", mamba_ssm_available()), ("triton", triton_available())) if ok]

    with tempfile.TemporaryDirectory(prefix="tse-gpu-bench-") as tmp:
        work = Path(tmp)
        write_inputs(work / "in", args.files)
        for name in args.models:
            for backend in ["reference", *kernels] if name.startswith("wavemamba") else ["auto"]:
                row = throughput(name, work / "in", work, args.files, args.batch_size, backend)
                print(row, flush=True)
                sections["throughput"].append(row)

    frames = round(FILE_SECONDS * SAMPLE_RATE / 32)  # WaveMamba frames in a six-second file
    for dtype in (torch.float32, torch.bfloat16):
        for grad in (False, True):
            sections["scan"].append(scan_speed(kernels, args.batch_size, frames, dtype, grad, args.repeats))
        sections["parity"] += [parity(kernel, dtype, 4, 2048) for kernel in kernels]

    print_table(
        f"Batch extraction on {meta['gpu']}: {args.files} x {FILE_SECONDS:g} s files (tse extract, incl. start-up)",
        ["model", "scan", "batch", "x real time", "audio h / min", "status"],
        [
            [r["model"], r["scan_backend"], r["batch_size"], r.get("x_realtime"), r.get("audio_hours_per_minute")]
            + [r["status"]]
            for r in sections["throughput"]
        ],
    )
    timed = [f"{b}_s" for b in ("reference", *kernels)] + [f"{k}_speedup" for k in kernels]
    print_table(
        "Selective scan, d_inner 512, d_state 16: reference vs fused kernels (seconds, median; speed-up x)",
        ["dtype", "pass", "batch", "length", *timed, "status"],
        [[r.get(k) for k in ("dtype", "pass", "batch", "length", *timed, "status")] for r in sections["scan"]],
    )
    keys = ["y", *GRAD_INPUTS, *PARAMETERS]
    print_table(
        "Kernel parity: max |kernel - reference| / max |reference| (output and gradients)",
        ["kernel", "dtype", *keys, "status"],
        [
            [r.get("kernel"), r.get("dtype"), *(r.get(f"{k}_rel_err") for k in keys), r["status"]]
            for r in sections["parity"]
        ],
    )
    write_results("gpu", meta, [{"section": k, **row} for k, rows in sections.items() for row in rows])


if __name__ == "__main__":
    main()
