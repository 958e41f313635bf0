"""The `-v/--verbose` report: what a command runs with (model, weights file, device, scan backend, threads, block
size), printed on stderr through `tse_cli.console.detail` before the work starts.

    from tse_cli.runinfo import report_run
    report_run(net, device, spec="waveformer", block_size=65536)   # prints only with -v/--verbose

`run_details` returns the same as (field, value) pairs, for a caller that prints or records them otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tse_cli import console


def scan_backend(net: Any, device: Any, grad: bool = False) -> str:
    """The selective-scan backend the Mamba layers of `net` use on `device` ("none" without Mamba layers); `grad`:
    for training (the scan must propagate gradients)."""
    import torch

    requested = sorted({m.scan_backend for m in net.modules() if hasattr(m, "scan_backend")})
    if not requested:
        return "none (no Mamba layers)"
    from tse_cli.models.ssm import resolve_backend

    dtype = next(net.parameters()).dtype
    probe = torch.empty(0, device=device, dtype=dtype)
    chosen = []
    for backend in requested:
        try:
            resolved = resolve_backend(backend, probe, grad=grad)
            chosen.append(f"{resolved} ({backend})" if backend == "auto" else backend)
        except (ValueError, RuntimeError) as err:
            chosen.append(f"{backend}: {err}")
    return ", ".join(chosen)


def device_name(device: Any) -> str:
    """`cpu`, or `cuda:0 (NVIDIA H200)`."""
    import torch

    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def run_details(
    net: Any,
    device: Any,
    spec: str | None = None,
    weights: str | Path | None = None,
    block_size: int | None = None,
    grad: bool = False,
) -> list[tuple[str, str]]:
    """(field, value) pairs describing a run of model `net` on `device`.

    `spec`: the name or path the user gave; `weights`: the weights file (default: `model.safetensors` in the
    checkpoint directory `tse_cli.weights.load_model` records on the model, if any); `block_size`: streaming
    block in samples at the model's rate; `grad`: the run trains (the scan backend that propagates gradients).
    """
    import torch

    rate = getattr(net, "sample_rate", None)
    parameters = sum(p.numel() for p in net.parameters())
    arch = getattr(net, "arch", type(net).__name__)
    about = ", ".join(
        [*([arch] if spec and spec != arch else []), f"{parameters:,} parameters"] + ([f"{rate} Hz"] if rate else [])
    )
    model = f"{spec or arch} ({about})"
    folder = getattr(net, "checkpoint_dir", None)
    if weights is None and folder is not None:
        weights = Path(folder) / "model.safetensors"
    rows = [
        ("model", model),
        ("weights", str(weights) if weights is not None else "none (new model)"),
        ("device", device_name(device)),
        ("scan backend", scan_backend(net, device, grad)),
        ("threads", f"{torch.get_num_threads()} intra-op, {torch.get_num_interop_threads()} inter-op"),
    ]
    if block_size is not None:
        length = f" ({1000 * block_size / rate:.0f} ms)" if rate else ""
        rows.append(("block size", f"{block_size} samples{length}"))
    return rows


def report_run(net: Any, device: Any, **details: Any) -> None:
    """Print `run_details(net, device, **details)` on stderr, one `field: value` line each, with -v only."""
    if console.verbose():
        for name, value in run_details(net, device, **details):
            console.detail(f"{name}: {value}")
