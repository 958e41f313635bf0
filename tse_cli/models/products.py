"""Matrix products of inference (`linear`): which implementation runs a product of a given size.

On a CPU without autograd four paths beat `F.linear`: tse's kernel for the few rows of a streamed chunk
(`tse_cli.models.kernels.linear`), tse's many-row kernel for the deep products of large blocks
(`kernels.matmul`), oneDNN against a weight packed for it for the other large ones, and MKL against a cached
transposed weight in between; the layers (the DCC encoder, the Mamba mixers) call `linear` and get the
one that fits. Under autograd, or while a graph is traced for `tse export`, it is the plain product.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tse_cli.models import kernels
from tse_cli.models.streaming import derived, scratch, transposed

# oneDNN's matrix product against a weight packed for it (what torch.compile's CPU backend uses after freezing):
# on this project's AVX-512 CPU 10-30% faster than MKL's for products of 1M MACs and more (13 rows, 512x512: 82
# against 119 us; 2048 rows: 10 against 12 ms), but each call costs about 15 us more, so smaller ones stay with
# MKL (1 row of 512x512: 33 against 24 us; 13 rows of 512x32: 19 against 9). None where torch lacks oneDNN.
_ONEDNN = getattr(torch.ops.mkldnn, "_linear_pointwise", None) if torch.backends.mkldnn.is_available() else None
ONEDNN_MACS = 1 << 20  # products of at least this many multiply-adds (rows * in * out) go through oneDNN
_PACK_ROWS = 2048  # the row count the packing is tuned for (the engine's block; also the best for 4-64 rows)


def _pack(weight: Tensor) -> Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(weight.reshape(weight.shape[0], -1), _PACK_ROWS)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """`F.linear(x, weight, bias)` for x (..., in) and a weight parameter (out, in) or (out, in, 1) -> (..., out).

    Without autograd on a CPU (float32): products of at most `kernels.LINEAR_ROWS` rows (a streamed chunk) run
    through tse's kernel against the weight packed in panels; larger ones of ONEDNN_MACS or more through tse's
    many-row kernel where it is the faster (`kernels.matmul_wins`), else through oneDNN against a weight packed
    for it (see above; the result is then oneDNN's tensor, not a scratch one); the others, and all of them
    without the kernels, against `transposed(weight)`: for few rows, a product with a
    contiguous (in, out) matrix is 1.5-2x faster on CPU than F.linear's (out, in) layout (75 against 110 us, 13
    rows, 512x512). Each packed form is made once per weight version (`tse_cli.models.streaming.derived`).
    """
    rows = x.reshape(-1, x.shape[-1])
    if rows.shape[0] <= kernels.LINEAR_ROWS and kernels.usable(rows, weight, bias):
        return kernels.linear(rows, weight, bias).view(*x.shape[:-1], weight.shape[0])
    large = rows.shape[0] * weight.numel() >= ONEDNN_MACS
    if large and kernels.matmul_wins(rows.shape[1], weight.shape[0]) and kernels.usable(rows, weight, bias):
        out = kernels.matmul(rows, kernels.wide_panels(weight), weight.shape[0], bias)
        return out.view(*x.shape[:-1], weight.shape[0])
    onednn = large and _ONEDNN is not None and rows.dtype == torch.float32
    onednn = onednn and rows.device.type == "cpu" and not torch.jit.is_tracing()  # (an exported graph: aten ops)
    if onednn and not (torch.is_grad_enabled() and (weight.requires_grad or rows.requires_grad)):
        out = _ONEDNN(rows, derived(weight, "onednn", _pack), bias, "none", [], "")
        return out.view(*x.shape[:-1], out.shape[-1])
    weight_t = transposed(weight)
    out = scratch(rows, (rows.shape[0], weight_t.shape[1]))
    out = torch.mm(rows, weight_t, out=out) if bias is None else torch.addmm(bias, rows, weight_t, out=out)
    return out.view(*x.shape[:-1], out.shape[-1])
