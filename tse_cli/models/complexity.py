"""Compute counter: parameters and multiply-accumulates (MACs) per second of input audio, for any model.

MACs are what `torch.utils.flop_counter.FlopCounterMode` counts during one offline forward (matrix products,
convolutions, attention kernels; MACs = FLOPs / 2), plus work that counter cannot see:

- selective scans (inside `MambaMixer` / `CrossMambaMixer`), counted from their shapes: per time step, channel
  (d_inner) and state (d_state) 4 MACs (decay delta*A, input delta*B*u, state update decay*h + input, output
  C.h), plus 3 per step and channel (delta*u, y + D*u, gate y*silu(z)):
  `batch * length * d_inner * (4 * d_state + 3)`. While counting, the scans do not run at all: a stand-in
  returns zeros of the right shapes, so the counter sees none of their work (nothing is counted twice) and a
  model with many long scans is counted in seconds;
- modules that compute a product with element-wise ops (e.g. a depthwise conv written as shifted
  multiply-adds) declare `uncounted_macs(args, output) -> int`, which is added after their forward.

Other element-wise work (norms, activations, residual additions, exp/softplus/SiLU evaluations) is not counted,
by the usual convention. The forward runs under `torch.no_grad`; build the model on the "meta" device to count
without computing anything (the counts depend on shapes only).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from unittest import mock

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from tse_cli.classes import NUM_CLASSES
from tse_cli.visual import EMBED_DIM as VISUAL_DIM

Inputs = tuple[Any, ...] | Callable[[nn.Module, float], tuple[Any, ...]]


def example_inputs(model: nn.Module, seconds: float = 1.0) -> tuple[Any, ...]:
    """Positional arguments for one forward over `seconds` of audio.

    A model's own `example_inputs(seconds)` wins; otherwise they follow the model protocol: a (1, 1, samples)
    mixture at `model.sample_rate` and a one-hot (1, 41) class query, or a (1, frames, 512) visual clue at
    `model.clue_rate` frames per second.
    """
    if hasattr(model, "example_inputs"):
        return tuple(model.example_inputs(seconds))
    parameter = next(model.parameters())
    device, dtype = parameter.device, parameter.dtype
    mixture = torch.randn(1, 1, round(seconds * model.sample_rate), device=device, dtype=dtype)
    if model.clue_kind == "class":
        query = torch.zeros(1, getattr(model, "label_len", NUM_CLASSES), device=device, dtype=dtype)
        return mixture, query.index_fill_(1, torch.tensor([0], device=device), 1.0)
    if model.clue_kind == "visual":
        frames = round(seconds * model.clue_rate)
        return mixture, torch.randn(1, frames, VISUAL_DIM, device=device, dtype=dtype)
    raise ValueError(f"{type(model).__name__}: unknown clue_kind {model.clue_kind!r}; pass `inputs`")


def scan_macs(batch: int, length: int, d_inner: int, d_state: int) -> int:
    """Analytic MACs of one selective scan (see the module docstring)."""
    return batch * length * d_inner * (4 * d_state + 3)


def _scan_shapes_only(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, *args: Any, **kwargs: Any) -> Any:
    """Stand-in for `selective_scan` while counting: zeros shaped like its outputs (y, and the last state when
    `return_last_state`), computed without any arithmetic the counter could see."""
    y = torch.zeros_like(u)
    if not kwargs.get("return_last_state", len(args) > 5 and args[5]):
        return y
    state_dtype = torch.float64 if u.dtype == torch.float64 else torch.float32
    return y, u.new_zeros(u.shape[0], u.shape[1], A.shape[1], dtype=state_dtype)


def _by_child(model: nn.Module, per_module: dict[str, dict[Any, int]]) -> dict[str, int]:
    """Counter MACs per top-level child of `model`, from FlopCounterMode's per-module table.

    The table only lists modules that were called and includes their descendants' counts, so a child that was
    not called itself (only its parts) gets the sum of its outermost called descendants.
    """
    root = type(model).__name__
    result = {}
    for child, _ in model.named_children():
        prefix = f"{root}.{child}"
        called = [name for name in per_module if name == prefix or name.startswith(prefix + ".")]
        outermost = [n for n in called if not any(n.startswith(other + ".") for other in called)]
        macs = sum(sum(per_module[name].values()) for name in outermost) // 2
        if macs:
            result[child] = macs
    return result


def count(
    model: nn.Module, seconds: float = 1.0, inputs: Inputs | None = None, **forward_kwargs: Any
) -> dict[str, Any]:
    """Parameters and MACs of `model` for one forward over `seconds` of input audio.

    `inputs`: the forward's positional arguments, or a callable (model, seconds) -> them; default
    `example_inputs(model, seconds)`. `forward_kwargs` go to the forward as well (e.g. diffusion steps).
    Returns `params`, `macs` (for the whole input), `macs_per_second`, `seconds`, and the three parts of `macs`:
    `counted_macs` (FlopCounterMode's; scans do not run while counting), `scan_macs` (analytic, whole scans) and
    `other_macs` (declared by modules); `by_module`: FlopCounterMode's MACs per top-level child module (what
    the root module computes itself is under "(root)").
    """
    if inputs is None:
        args = example_inputs(model, seconds)
    else:
        args = inputs(model, seconds) if callable(inputs) else tuple(inputs)

    from tse_cli.models import crossmamba, kernels, products
    from tse_cli.models.crossmamba import CrossMambaMixer, MambaMixer

    mixer_calls: list[tuple[nn.Module, int, int]] = []
    other = 0

    def on_mixer(module: nn.Module, call_args: tuple[Tensor, ...], output: Tensor) -> None:
        mixer_calls.append((module, output.shape[0], output.shape[1]))  # output (batch, length, d_model)

    def on_declared(module: nn.Module, call_args: tuple[Any, ...], output: Any) -> None:
        nonlocal other
        other += int(module.uncounted_macs(call_args, output))

    hooks = []
    for module in model.modules():
        if isinstance(module, (MambaMixer, CrossMambaMixer)):
            hooks.append(module.register_forward_hook(on_mixer))
        if hasattr(module, "uncounted_macs"):
            hooks.append(module.register_forward_hook(on_declared))
    try:
        with (
            FlopCounterMode(display=False) as counter,
            torch.no_grad(),
            mock.patch.object(crossmamba, "selective_scan", _scan_shapes_only),
            mock.patch.object(products, "_ONEDNN", None),  # products the counter sees (it has no oneDNN formula)
            mock.patch.object(kernels, "available", lambda: False),  # layers whose uncounted_macs hooks run
        ):
            model(*args, **forward_kwargs)
    finally:
        for hook in hooks:
            hook.remove()

    scans = sum(scan_macs(batch, length, *mixer.A_log.shape) for mixer, batch, length in mixer_calls)
    counted = counter.get_total_flops() // 2
    by_module = _by_child(model, counter.get_flop_counts())
    root = counted - sum(by_module.values())
    if root:
        by_module["(root)"] = root
    total = counted + scans + other
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "seconds": seconds,
        "macs": total,
        "macs_per_second": total / seconds,
        "counted_macs": counted,
        "scan_macs": scans,
        "other_macs": other,
        "by_module": by_module,
    }
