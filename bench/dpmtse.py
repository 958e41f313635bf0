"""Seconds per 10 s clip for DPM-TSE at 50 DDIM steps, on CPU (2 threads) and on CUDA when one is present.

    .venv/bin/python bench/dpmtse.py [--arch dpm-tse] [--steps 50] [--cpu-steps 2] [--threads 2]

Random weights of the published size (timing does not depend on their values), one 10 s clip (1000 mel frames),
one class, eta 1, float32. Each device is timed in parts after a warm-up: the mel front end, the DDIM loop
(`--cpu-steps` steps on CPU, as the base model takes many seconds per step there, all `--steps` on CUDA) and the
vocoder. Where fewer steps than `--steps` were run, the clip time is extrapolated as
mel + steps x (seconds per step) + vocoder, and the table says so. The U-Net's GMAC per step (counted on the
meta device) gives the achieved GMAC/s; CPU/wall (process CPU seconds per wall second in the DDIM loop, about
the thread count on an idle machine) shows whether the CPU was shared. Prints a table and writes
bench/results/dpmtse.json.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from common import machine, print_table, write_results

from tse_cli.classes import class_index, multi_hot
from tse_cli.models import create
from tse_cli.models.dpmtse import class_labels

CLIP_SECONDS = 10.0


def _timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """Wall seconds and this process's CPU seconds of one call."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, time.process_time() - cpu


def unet_gmac_per_step(arch: str) -> float:
    """GMAC of one U-Net pass over a 10 s window (1000 frames), counted on the meta device."""
    from tse_cli.models.complexity import count

    with torch.device("meta"):
        model = create(arch)
    steps = model.steps
    return count(model, seconds=CLIP_SECONDS)["by_module"]["unet"] / steps / 1e9


@torch.inference_mode()
def measure(arch: str, device: torch.device, steps: int, timed_steps: int) -> dict:
    """Time the parts of one 10 s extraction on `device`; extrapolate when `timed_steps` < `steps`."""
    torch.manual_seed(0)
    model = create(arch).to(device).eval()
    mixture = 0.1 * torch.randn(1, 1, int(CLIP_SECONDS * model.sample_rate), device=device)
    labels = class_labels(torch.tensor(multi_hot([class_index("Cough")]))[None]).to(device)
    frames = model.frames_for(mixture.shape[-1])
    generator = torch.Generator(device).manual_seed(0)

    mel = model.mixture_mel(mixture, frames)
    model.velocity(mel, 999, mel, labels)  # warm-up (kernels, allocator)
    model.vocode(mel, mixture.shape[-1])

    mel_s, _ = _timed(lambda: model.mixture_mel(mixture, frames), device)
    loop_s, loop_cpu = _timed(
        lambda: model.sample(mel, labels, steps=timed_steps, eta=1.0, generator=generator), device
    )
    vocoder_s, _ = _timed(lambda: model.vocode(mel, mixture.shape[-1]), device)
    per_step = loop_s / timed_steps
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",  # the CPU model: meta
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "steps_timed": timed_steps,
        "mel_s": round(mel_s, 4),
        "per_step_s": round(per_step, 4),
        "loop_cpu_per_wall": round(loop_cpu / loop_s, 2),  # ~threads when the CPU is not shared
        "vocoder_s": round(vocoder_s, 4),
        "clip_s": round(mel_s + steps * per_step + vocoder_s, 3),
        "extrapolated": timed_steps < steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="dpm-tse", choices=["dpm-tse", "dpm-tse-large"])
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps per clip")
    parser.add_argument("--cpu-steps", type=int, default=2, help="steps actually run on CPU (then extrapolated)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    rows = [measure(args.arch, torch.device("cpu"), args.steps, min(args.cpu_steps, args.steps))]
    if torch.cuda.is_available():
        rows.append(measure(args.arch, torch.device("cuda"), args.steps, args.steps))
    else:
        rows.append({"device": "cuda", "note": "not measured (no CUDA GPU)"})
    gmac = unet_gmac_per_step(args.arch)
    for row in rows:
        if "clip_s" in row:
            row["x_realtime"] = CLIP_SECONDS / row["clip_s"]
            row["gmac_per_s"] = gmac / row["per_step_s"]
            row["note"] = f"extrapolated from {row['steps_timed']} steps" if row["extrapolated"] else "measured"

    columns = ["device", "threads", "mel s", "s/step", "vocoder s", "s per clip", "x real time"]
    columns += ["GMAC/s", "CPU/wall", "note"]
    keys = ["device", "threads", "mel_s", "per_step_s", "vocoder_s", "clip_s", "x_realtime"]
    keys += ["gmac_per_s", "loop_cpu_per_wall", "note"]
    title = (
        f"DPM-TSE ({args.arch}), one 10 s clip at 16 kHz, {args.steps} DDIM steps, float32, batch 1; "
        f"U-Net {gmac:.1f} GMAC per step"
    )
    print_table(title, columns, [[row.get(k) for k in keys] for row in rows])
    meta = machine() | {"arch": args.arch, "steps": args.steps, "clip_seconds": CLIP_SECONDS}
    write_results("dpmtse", meta | {"unet_gmac_per_step": gmac}, rows)


if __name__ == "__main__":
    main()
