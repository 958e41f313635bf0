"""Selective-scan speed: the chunked reference scan against the naive per-step loop (CPU), and the reference
against each fused kernel, mamba_ssm's and tse's Triton kernels (CUDA, when a GPU is present).

    .venv/bin/python bench/scan.py                      # default grid, 1 thread
    .venv/bin/python bench/scan.py --threads 2 --batch 1 4 --length 1000 20000

Shapes are WaveMamba-large's (d_inner 512, d_state 16); length counts frames (32 samples at 44.1 kHz each, so
20000 frames = 14.5 s of audio). Prints a table and writes bench/results/scan.json. The naive loop is skipped
where it would take minutes and gigabytes under autograd (--max-naive-grad-steps), marked "skipped".
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from common import machine, print_table, write_results

from tse_cli.models.ssm import mamba_ssm_available, selective_scan, triton_available


def make_inputs(
    batch: int, d_inner: int, d_state: int, length: int, device: str, dtype: torch.dtype, time_major: bool = False
) -> dict:
    """Random inputs like a trained Mamba layer's (softplus delta around 0.01-0.1, S4D-real A). `time_major`: the
    sequences are transposed views of (batch, length, channels) tensors, the layout the Mamba mixer passes."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        t = torch.randn(shape[0], shape[2], shape[1], generator=g) if time_major else torch.randn(*shape, generator=g)
        return (t.transpose(1, 2) if time_major else t).to(device, dtype)

    return {
        "u": rand(batch, d_inner, length),
        "delta": rand(batch, d_inner, length),
        "A": -torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1).to(device),
        "B": rand(batch, d_state, length),
        "C": rand(batch, d_state, length),
        "D": torch.ones(d_inner, device=device),
        "z": rand(batch, d_inner, length),
        "delta_bias": torch.full((d_inner,), -3.0, device=device),
    }


def timed(fns: dict[str, Callable[[], None]], repeats: int, device: str) -> dict[str, float]:
    """Best wall time (seconds) of each function over `repeats` rounds. The functions alternate within a round so
    that a busy machine slows them alike. A first round of warm-up runs is added unless every run takes over a
    second (then warm-up effects are negligible and the first round counts)."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    best = dict.fromkeys(fns, float("inf"))
    rounds, done = repeats, 0
    while done < rounds:
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            best[name] = min(best[name], time.perf_counter() - start)
        if rounds == repeats and done == 0 and min(best.values()) < 1.0:
            rounds, best = rounds + 1, dict.fromkeys(fns, float("inf"))  # that was the warm-up round
        done += 1
    return best


def runner(inputs: dict, backend: str, grad: bool) -> Callable[[], None]:
    """A closure that runs one scan (and its backward pass when `grad`)."""

    def run() -> None:
        if not grad:
            with torch.no_grad():
                selective_scan(**inputs, delta_softplus=True, backend=backend)
            return
        leaves = {k: v.detach().requires_grad_(k in ("u", "delta", "B", "C", "z")) for k, v in inputs.items()}
        selective_scan(**leaves, delta_softplus=True, backend=backend).float().square().mean().backward()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--length", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--d-inner", type=int, default=512)
    parser.add_argument("--d-state", type=int, default=16)
    parser.add_argument("--passes", nargs="+", choices=["fwd", "fwd+bwd"], default=["fwd", "fwd+bwd"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--time-major", action="store_true", help="sequences in the Mamba mixer's layout (d_inner innermost in memory)"
    )
    parser.add_argument("--repeats", type=int, default=1, help="timed rounds after the warm-up round (best kept)")
    parser.add_argument("--max-steps", type=int, default=80000, help="batch*length cap, CPU forward rows")
    parser.add_argument("--max-grad-steps", type=int, default=20000, help="batch*length cap, CPU fwd+bwd rows")
    parser.add_argument("--max-naive-grad-steps", type=int, default=5000, help="batch*length cap, naive fwd+bwd")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    for grad in [p == "fwd+bwd" for p in args.passes]:
        for batch in args.batch:
            for length in args.length:
                if batch * length > (args.max_grad_steps if grad else args.max_steps):
                    continue
                inputs = make_inputs(batch, args.d_inner, args.d_state, length, "cpu", torch.float32, args.time_major)
                backends = ["reference"]
                if not grad or batch * length <= args.max_naive_grad_steps:
                    backends.append("naive")
                t = timed({b: runner(inputs, b, grad) for b in backends}, args.repeats, "cpu")
                rows.append(_row("cpu", "float32", grad, batch, length, "naive", "reference", t))

    kernels = [k for k, ok in (("cuda", mamba_ssm_available()), ("triton", triton_available())) if ok]
    if torch.cuda.is_available() and kernels:
        for dtype in (torch.float32, torch.bfloat16):
            for grad in [p == "fwd+bwd" for p in args.passes]:
                for batch in args.batch:
                    for length in args.length:
                        inputs = make_inputs(batch, args.d_inner, args.d_state, length, "cuda", dtype, args.time_major)
                        backends = ["reference", *kernels]
                        t = timed({b: runner(inputs, b, grad) for b in backends}, args.repeats, "cuda")
                        name = str(dtype).removeprefix("torch.")
                        rows += [_row("cuda", name, grad, batch, length, "reference", k, t) for k in kernels]
    else:
        why = "no CUDA GPU" if not torch.cuda.is_available() else "neither mamba_ssm nor Triton imports"
        rows.append({"device": "cuda", "note": f"not measured ({why})"})

    columns = ["device", "dtype", "pass", "batch", "length", "baseline", "baseline s", "backend", "backend s"]
    keys = ["device", "dtype", "pass", "batch", "length", "baseline", "baseline_s", "backend", "backend_s"]
    table = [[row.get(k) for k in [*keys, "speedup", "note"]] for row in rows]
    layout = "time-major" if args.time_major else "(batch, channels, length) contiguous"
    title = (
        f"Selective scan, d_inner {args.d_inner}, d_state {args.d_state}, {layout}, {args.threads} CPU thread(s), "
        f"best of {args.repeats} round(s) (speed-up: baseline s / backend s)"
    )
    print_table(title, [*columns, "speed-up", "note"], table)
    meta = machine() | {"d_inner": args.d_inner, "d_state": args.d_state, "repeats": args.repeats, "layout": layout}
    write_results("scan", meta, rows)


def _row(device: str, dtype: str, grad: bool, batch: int, length: int, base: str, new: str, times: dict) -> dict:
    """One result row from `times` (backend -> best seconds), where the baseline `base` may be missing (skipped)."""
    base_s, new_s = times.get(base), times[new]
    return {
        "device": device,
        "dtype": dtype,
        "pass": "fwd+bwd" if grad else "fwd",
        "batch": batch,
        "length": length,
        "baseline": base,
        "baseline_s": base_s,
        "backend": new,
        "backend_s": new_s,
        "speedup": None if base_s is None else base_s / new_s,
        "note": "baseline skipped (--max-naive-grad-steps)" if base_s is None else "",
    }


if __name__ == "__main__":
    main()
