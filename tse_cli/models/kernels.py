"""tse's CPU kernels (`kernels.c`): fused inference loops, built with the C compiler on first use and loaded with
ctypes (no Python extension module, no build step at install).

The kernels are optional: every caller has the PyTorch operations they replace (the tests compare the two), and
a failure anywhere here only means those are used. The source is compiled once per machine with `-O3
-march=native` into `cache_dir()` (`$TSE_KERNEL_CACHE`, else `$XDG_CACHE_HOME/tse/kernels` or
`~/.cache/tse/kernels`), under a name hashing the source, the compiler, the flags, the platform and the CPU, written
atomically (a tse temporary renamed into place, so concurrent processes never load a partial file) and loaded
only from a folder and a file no other user can write. Without a working compiler (`$CC`, else cc, gcc or
clang), with a failing build, an unwritable or unsafe cache, `library()` is None and every caller keeps its
PyTorch operations (same outputs); `TSE_CPU_KERNELS=0` does the same on purpose. `tse --version` says which.

Here: loading, and the wrappers of the non-scan kernels, which the DCC encoder and the Mamba mixer call instead
of chains of element-wise operations (`usable` says when: CPU float32 tensors, no autograd): `depthwise` (a
causal depthwise convolution, then LayerNorm + ReLU or SiLU) and `norm` (LayerNorm + ReLU plus a residual, or
RMSNorm); `linear` and `matmul`, the products for the few rows of a streamed chunk and for the many rows of a
long block (`tse_cli.models.products` picks them); `dcc_step`, the whole DCC encoder in one call (a long block in
tiles of rows); `cross_mamba_step`, a streamed chunk through a CrossMamba block in one call; and `dcc_front` and
`dcc_back`, the rest of a DCC extractor's chunk around its decoder.
The selective scan's wrapper is `tse_cli.models.ssm.cpu_kernel`.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import torch
from torch import Tensor, nn

from tse_cli.atomic import create_temp
from tse_cli.models.streaming import ContextBuffer, derived, transposed, working

SOURCE = Path(__file__).with_name("kernels.c")
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-shared", "-fPIC", "-Wno-psabi")
OPENMP = "-fopenmp"  # tried first: the kernels then run on torch's own OpenMP threads (libgomp.so.1, loaded once)
ENV_VAR = "TSE_CPU_KERNELS"  # "0" (or off, false, no): never build or use them
CACHE_VAR = "TSE_KERNEL_CACHE"  # where builds are kept (see cache_dir)
POST = {"none": 0, "layer_norm_relu": 1, "silu": 2, "rms_norm": 3}  # the source's POST_* codes
MAX_CHANNELS = 8192  # the norm kernel's row buffer (on the C stack)
MAX_STATE = 64  # the scan's d_state limit (its per-block state array)
LINEAR_ROWS = 32  # products of at most this many rows go through `linear` (oneDNN and MKL win from about 64)

_BUILD_ERRORS: list[str] = []  # why the kernels are unavailable, when they are

_i64, _ptr, _int, _float = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int, ctypes.c_float
_SIGNATURES = {
    "tse_scan_f32": [_i64] * 6 + [_ptr, _i64, _i64] * 2 + [_ptr] + [_ptr, _i64, _i64] * 2
    + [_ptr, _ptr, _i64, _i64, _ptr, _int, _ptr, _i64, _i64, _ptr, _int, _int],
    "tse_depthwise_f32": [_i64] * 3 + [_ptr, _i64, _i64] * 2 + [_ptr, _i64, _i64, _ptr, _int, _ptr, _ptr, _float]
    + [_ptr, _i64, _i64, _i64, _i64, _int],
    "tse_norm_f32": [_i64, _i64, _ptr, _i64, _int, _ptr, _ptr, _float, _ptr, _i64, _ptr, _i64, _int],
    "tse_linear_f32": [_i64] * 3 + [_ptr, _i64, _ptr, _ptr, _ptr, _i64, _i64, _i64, _int],
    "tse_lanes": [],
    "tse_openmp": [],
    "tse_dcc_step_f32": [_i64] * 4 + [_ptr] * 4 + [_int],
    "tse_dcc_step_work": [_i64, _i64, _int],
    "tse_matmul_f32": [_i64] * 3 + [_ptr, _i64, _ptr, _ptr, _ptr, _i64, _ptr, _int],
    "tse_matmul_work": [_i64, _i64, _int],
    "tse_cross_mamba_step_f32": [_i64] * 2 + [_ptr] * 7,
    "tse_dcc_front_f32": [_i64, _i64, _ptr, _ptr, _i64, _i64] + [_ptr] * 7,
    "tse_dcc_back_f32": [_i64, _i64] + [_ptr] * 5 + [_i64] + [_ptr] * 3,
    "tse_dcc_label_f32": [_i64, _i64] + [_ptr] * 6 + [_int],
    "tse_dcc_mask_f32": [_i64, _i64] + [_ptr] * 5 + [_i64, _int],
    "tse_dcc_overlap_f32": [_i64, _i64] + [_ptr] * 3 + [_int],
    "tse_dcc_chunk_f32": [_i64, _i64, _ptr, _ptr, _i64, _ptr],
}  # fmt: skip
_RETURNS = {
    "tse_depthwise_f32": None,
    "tse_linear_f32": None,
    "tse_matmul_f32": None,
    "tse_dcc_step_work": ctypes.c_int64,
    "tse_matmul_work": ctypes.c_int64,
}  # the others return an int


# Calls over fewer values than this run on one thread: starting a team of threads costs more than it saves.
PARALLEL_ELEMENTS = 1 << 16


def threads(elements: int) -> int:
    """OpenMP threads for a kernel call over `elements` values: torch's intra-op thread count from
    PARALLEL_ELEMENTS up, else 1. Built with OpenMP, the kernels share torch's libgomp and its thread team (the
    threads torch's own operations just used, still spinning for work), instead of waking threads of their own;
    built without it (no OpenMP in the compiler), they run in the calling thread."""
    return torch.get_num_threads() if elements >= PARALLEL_ELEMENTS else 1


def _compiler() -> str | None:
    return os.environ.get("CC") or next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)


def _cpu_identity() -> str:
    """What -march=native depends on: the CPU model and feature flags (Linux), else the platform's description."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(next((x for x in lines if x.startswith(k)), "") for k in ("model name", "flags", "Features"))
    except OSError:
        return f"{platform.machine()} {platform.processor()} {platform.platform()}"


def cache_dir() -> Path:
    """Where built kernels are kept: `$TSE_KERNEL_CACHE`, else `$XDG_CACHE_HOME/tse/kernels`, else
    `~/.cache/tse/kernels` (a folder of the user's own: see `_safe`)."""
    explicit = os.environ.get(CACHE_VAR)
    if explicit:
        return Path(os.path.expanduser(explicit))
    return Path(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")) / "tse" / "kernels"


def _library_path(compiler: str) -> Path:
    """The build's name in `cache_dir()`: a hash of the source, the compiler and its version, the flags, the
    platform and the CPU, so that a cache shared between machines or compilers never loads another's build."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    parts = [SOURCE.read_text(), compiler, version, *FLAGS, OPENMP, sys.platform, platform.machine(), _cpu_identity()]
    key = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
    return cache_dir() / f"tse-kernels-{key}{'.dll' if os.name == 'nt' else '.so'}"


def _safe(path: Path) -> None:
    """Raise PermissionError unless `path` (the cache folder or a library in it) belongs to this user (or root)
    and nobody else can write to it: a library loaded from a place others can write runs their code."""
    if os.name == "nt":
        return
    info = path.stat()
    if info.st_uid not in (os.getuid(), 0) or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PermissionError(f"{path} is writable by other users; not loading a library from it")


def _build(compiler: str, target: Path) -> None:
    """Compile SOURCE into `target` atomically: into a tse temporary beside it (`tse_cli.atomic`), then renamed,
    so that concurrent processes (shards, workers, ranks) only ever load a complete library."""
    tmp = create_temp(target)
    try:
        for flags in ((*FLAGS, OPENMP), FLAGS):  # without OpenMP where the compiler has none (Apple's clang)
            done = subprocess.run([compiler, *flags, str(SOURCE), "-o", str(tmp)], capture_output=True, text=True,
                                  timeout=120)  # fmt: skip
            if not done.returncode:
                break
        if done.returncode:
            raise RuntimeError(f"{compiler} failed: {done.stderr.strip()[:500]}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _turned_off() -> bool:
    return os.environ.get(ENV_VAR, "").strip().lower() in ("0", "off", "false", "no")


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernels (built into `cache_dir()` on first call), or None when they are turned off or cannot
    be built or loaded here (every caller then keeps its PyTorch operations; `build_error()` says why)."""
    if _turned_off():
        _BUILD_ERRORS.append(f"turned off by {ENV_VAR}={os.environ[ENV_VAR]}")
        return None
    compiler = _compiler()
    if compiler is None:
        _BUILD_ERRORS.append("no C compiler found (set $CC, or install cc, gcc or clang)")
        return None
    try:
        path = _library_path(compiler)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _safe(path.parent)
        if not path.exists():
            _build(compiler, path)
        _safe(path)
        loaded = ctypes.CDLL(str(path))
        for name, argtypes in _SIGNATURES.items():
            function = getattr(loaded, name)
            function.argtypes = argtypes
            function.restype = _RETURNS.get(name, ctypes.c_int)
    except (OSError, RuntimeError, subprocess.SubprocessError, AttributeError) as err:
        _BUILD_ERRORS.append(f"{type(err).__name__}: {err}")
        return None
    return loaded


def describe() -> str:
    """One line for `tse --version`: whether the kernels are in use, without building them."""
    if _turned_off():
        return f"CPU kernels off ({ENV_VAR}={os.environ[ENV_VAR]})"
    if library.cache_info().currsize:
        return "CPU kernels on" if library() is not None else f"CPU kernels off ({build_error()})"
    compiler = _compiler()
    if compiler is None:
        return "CPU kernels off (no C compiler)"
    try:
        built = _library_path(compiler).exists()
    except (OSError, subprocess.SubprocessError):
        return f"CPU kernels off ({compiler} does not run)"
    return "CPU kernels built" if built else f"CPU kernels not built yet ({compiler}, on first CPU inference)"


def available() -> bool:
    """True when the kernels are built (or build now) and load."""
    return library() is not None


def build_error() -> str:
    """Why `library()` is None ("" when they are available or were not tried)."""
    return _BUILD_ERRORS[-1] if _BUILD_ERRORS else ""


def usable(*tensors: Tensor | None) -> bool:
    """The kernels can replace PyTorch operations on these tensors (the first one's last axis the channels): CPU
    float32, at most MAX_CHANNELS channels, autograd off (`torch.no_grad` or `torch.inference_mode`: the kernels
    have no backward pass, and the layer's parameters need theirs whatever its inputs), kernels built, and no
    graph being traced (`tse export` traces the PyTorch operations)."""
    if torch.is_grad_enabled() or torch.jit.is_tracing():
        return False
    if tensors and tensors[0] is not None and tensors[0].shape[-1] > MAX_CHANNELS:
        return False
    for t in tensors:
        if t is not None and (t.dtype != torch.float32 or t.device.type != "cpu"):
            return False
    return available()


def address(t: Tensor | None) -> int | None:
    """t's data pointer, or None (NULL) for an optional input left out."""
    return None if t is None else t.data_ptr()


def _rows(t: Tensor) -> Tensor:
    """t (..., channels) with unit stride along channels (copied if needed)."""
    return t if t.stride(-1) == 1 else t.contiguous()


def depthwise(
    x: Tensor,
    past: Tensor | None,
    conv: nn.Conv1d,
    dilation: int,
    post: str,
    norm: nn.LayerNorm | None = None,
) -> Tensor:
    """`post(causal_depthwise(x, past, conv.weight, conv.bias, dilation))` in one pass: x (batch, n, channels)
    after `past` (batch, (k - 1) * dilation, channels) or zeros (None) -> (batch, n, channels), a scratch tensor
    inside a streamer's chunk. `post`: "layer_norm_relu" (with `norm`), "silu" or "none"."""
    x = _rows(x)
    past = None if past is None else _rows(past)
    batch, n, channels = x.shape
    out = working(x, x.shape)
    taps = transposed(conv.weight)  # (k, channels), contiguous
    args = (
        batch, n, channels,
        *(x.data_ptr(), x.stride(0), x.stride(1)),
        *((None, 0, 0) if past is None else (past.data_ptr(), past.stride(0), past.stride(1))),
        taps.data_ptr(), taps.shape[0], dilation, address(conv.bias), POST[post],
        address(None if norm is None else norm.weight), address(None if norm is None else norm.bias),
        0.0 if norm is None else norm.eps,
        *(out.data_ptr(), out.stride(0), out.stride(1)),
    )  # fmt: skip
    library().tse_depthwise_f32(*args, 0, n, threads(n * batch * channels))
    return out


def norm_eps(module: nn.LayerNorm | nn.RMSNorm) -> float:
    """The epsilon `module` normalises with (an RMSNorm's None: float32's machine epsilon, as torch's)."""
    return module.eps if module.eps is not None else torch.finfo(torch.float32).eps


def norm(
    y: Tensor, module: nn.LayerNorm | nn.RMSNorm, residual: Tensor | None = None, out: Tensor | None = None
) -> Tensor:
    """`residual + relu(layer_norm(y))` (a LayerNorm `module`) or `rms_norm(y)` (an RMSNorm, no residual) in one
    pass: y (..., channels) -> the same shape; `out` (may be `residual` or `y` itself) where it goes, else a
    scratch tensor inside a streamer's chunk, else a new one."""
    y = _rows(y)
    if residual is not None and residual.shape != y.shape:
        raise ValueError(f"residual {tuple(residual.shape)} does not match y {tuple(y.shape)}")
    rows_y = y.reshape(-1, y.shape[-1])
    layer_norm = isinstance(module, nn.LayerNorm)
    if out is None:
        out = working(y, y.shape)
    rows_out = out.view(-1, y.shape[-1])
    rows_res = None if residual is None else residual.reshape(-1, y.shape[-1])
    eps = norm_eps(module)
    rows, channels = rows_y.shape
    post, gamma = POST["layer_norm_relu" if layer_norm else "rms_norm"], module.weight.data_ptr()
    beta = address(module.bias if layer_norm else None)
    status = library().tse_norm_f32(
        rows, channels, rows_y.data_ptr(), rows_y.stride(0), post, gamma, beta, eps,
        address(rows_res), 0 if rows_res is None else rows_res.stride(0),
        rows_out.data_ptr(), rows_out.stride(0), threads(rows * channels),
    )  # fmt: skip
    if status:
        raise ValueError(f"tse_norm_f32 takes at most {MAX_CHANNELS} channels, got {channels}")
    return out


def pack_panels(weight: Tensor, panes: int = 1) -> Tensor:
    """weight (out, in) or (out, in, 1) -> (ceil(out / width), in, width) contiguous, zero past `out`, width =
    `panes` times the kernels' vector width (8 or 16 lanes): panel p holds output columns [p width, (p + 1) width)."""
    w = weight.reshape(weight.shape[0], -1)
    width = library().tse_lanes() * panes
    padded = w.new_zeros(-(-w.shape[0] // width) * width, w.shape[1])
    padded[: w.shape[0]] = w
    return padded.view(-1, width, w.shape[1]).transpose(1, 2).contiguous()


def linear(rows: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """`F.linear(rows, weight, bias)` for rows (m, in), m <= LINEAR_ROWS (a streamed chunk's frames), and a weight
    parameter (out, in) or (out, in, 1) -> (m, out), a scratch tensor inside a streamer's chunk. The weight is
    packed in panels once per weight version (`derived`); each panel is read once per 13 rows, not once per row
    as in MKL's and oneDNN's small-row paths (1.3-2x faster than either here, 13 rows of 512 x 512)."""
    rows = _rows(rows)
    m, k = rows.shape
    if m > LINEAR_ROWS:
        raise ValueError(f"tse_linear_f32 takes at most {LINEAR_ROWS} rows, got {m}")
    packed = panels(weight)
    out = working(rows, (m, weight.shape[0]))
    library().tse_linear_f32(
        m, k, weight.shape[0], rows.data_ptr(), rows.stride(0), packed.data_ptr(), address(bias), out.data_ptr(),
        out.stride(0), 0, packed.shape[0], threads(m * weight.numel()),
    )  # fmt: skip
    return out


def matmul_wins(k: int, n: int) -> bool:
    """Whether `matmul` beats oneDNN on many rows of `k` inputs and `n` outputs: deep products (k >= 512) with
    n >= 64 outputs (WaveMamba's out_proj and out_conv, 1.1-1.2x faster on 2048 rows, `bench/products.py`); on
    shallower or narrower ones oneDNN is as fast or faster (its 512 x 512 encoder product: even; the encoder gains
    from `dcc_step` keeping its tiles in the cache, not from the product)."""
    return k >= 512 and n >= 64


def matmul(rows: Tensor, wide: Tensor, n: int, bias: Tensor | None = None) -> Tensor:
    """`rows @ W.T + bias` for the many rows (m, in) of a long block (offline), W (n, in) given packed as `wide`
    (`wide_panels`, or `pack_panels(W, 2)`) -> (m, n), a scratch tensor inside a streamer's chunk: tse's tiled
    product (kernels.c, `product_tile`; see `matmul_wins`). Rows of unit stride along `in`."""
    rows = _rows(rows)
    m, k = rows.shape
    if wide.shape[1] != k or wide.shape[0] * wide.shape[2] < n:
        raise ValueError(f"matmul: wide panels {tuple(wide.shape)} do not fit ({m}, {k}) rows and {n} outputs")
    out = working(rows, (m, n))
    count = torch.get_num_threads()
    work = working(rows, (library().tse_matmul_work(k, n, count),))
    library().tse_matmul_f32(m, k, n, rows.data_ptr(), rows.stride(0), wide.data_ptr(), address(bias),
                             out.data_ptr(), out.stride(0), work.data_ptr(), count)  # fmt: skip
    return out


def panels(weight: Tensor) -> Tensor:
    """`weight` packed for `linear` (see `pack_panels`), once per weight version."""
    return derived(weight, "panels", pack_panels)


def wide_panels(weight: Tensor) -> Tensor:
    """`weight` packed in panels two vectors wide, for the products of long blocks (`dcc_step`), once per weight
    version."""
    return derived(weight, "wide panels", lambda w: pack_panels(w, 2))


class DCCLayer(ctypes.Structure):
    """One encoder layer for `dcc_step` (kernels.c's `tse_dcc_layer`): addresses of its weights, in the layouts
    the kernels read (taps `transposed`, the 1x1 weight as `panels` and `wide_panels`), and of its
    `ContextBuffer`'s buffer."""

    _fields_ = [
        *((name, _ptr) for name in ("taps", "dw_bias", "gamma1", "beta1", "panels", "wide", "pw_bias", "gamma2")),
        ("beta2", _ptr),
        ("buffer", _ptr),
        *((name, _i64) for name in ("k", "dilation", "capacity", "context", "end")),
        ("eps1", _float),
        ("eps2", _float),
    ]


def dcc_step(layers: ctypes.Array, x: Tensor, out: Tensor) -> None:
    """The DCC encoder on x (batch, n, channels), contiguous, into `out` (same shape): every layer of `layers` (a
    ctypes array of `DCCLayer`) in one call, their context buffers read and advanced (each layer's `end`
    updated). A streamed chunk goes layer by layer; a long block layer by layer in tiles of rows, each tile's
    steps while it is in the cache (kernels.c), in working memory of the size `tse_dcc_step_work` asks."""
    if not (x.is_contiguous() and out.is_contiguous()):
        raise ValueError("dcc_step needs contiguous x and out")
    batch, n, channels = x.shape
    count = threads(x.numel())
    work = working(x, (library().tse_dcc_step_work(batch * n, channels, count),))
    function = library().tse_dcc_step_f32
    if function(batch, n, channels, len(layers), layers, x.data_ptr(), out.data_ptr(), work.data_ptr(), count):
        raise ValueError(f"tse_dcc_step_f32 takes at most {MAX_CHANNELS} channels, got {channels}")


class MambaBlock(ctypes.Structure):
    """A causal CrossMamba block for `cross_mamba_step` (kernels.c's `tse_mamba_block`): addresses of its
    weights in the layouts the kernels read (products as `panels`, conv taps and A `transposed`), sizes, eps."""

    _fields_ = [
        *((name, _ptr) for name in ("norm_query", "norm_value", "in_panels", "in_bias", "query_panels")),
        *((name, _ptr) for name in ("query_bias", "taps", "conv_bias", "x_panels", "dt_panels", "dt_bias", "A_t")),
        *((name, _ptr) for name in ("D", "out_panels", "out_bias")),
        *((name, _i64) for name in ("d_model", "d_inner", "d_state", "dt_rank", "d_conv")),
        ("eps_query", _float),
        ("eps_value", _float),
    ]


def mamba_work(block: MambaBlock, rows: int) -> int:
    """Floats of working memory `cross_mamba_step` needs for `rows` (batch * frames) rows."""
    return rows * (2 * block.d_model + 6 * block.d_inner + block.dt_rank + 2 * block.d_state)


def cross_mamba_step(
    block: MambaBlock, query: Tensor, value: Tensor, out: Tensor, conv: Tensor, ssm: Tensor, work: Tensor
) -> None:
    """out = the block on a streamed chunk, query and value (batch, n, d_model) contiguous, after and updating
    `conv` (batch, d_conv - 1, d_inner) contiguous (the conv's last inputs) and `ssm` (batch, d_inner, d_state)
    contiguous; `work`: `mamba_work` floats."""
    tensors = (query, value, out, conv, ssm, work)
    if work.numel() < mamba_work(block, query.shape[0] * query.shape[1]) or not all(t.is_contiguous() for t in tensors):
        raise ValueError("cross_mamba_step needs contiguous tensors and mamba_work floats of work")
    function = library().tse_cross_mamba_step_f32
    if function(query.shape[0], query.shape[1], ctypes.byref(block), *(t.data_ptr() for t in tensors)):
        raise ValueError(f"tse_cross_mamba_step_f32 takes at most {MAX_CHANNELS} channels and {MAX_STATE} states")


class DCCModel(ctypes.Structure):
    """A DCC extractor around its encoder and decoder for `dcc_front` and `dcc_back` (kernels.c's
    `tse_dcc_model`): in_conv and out_conv as panels, the grouped projections' taps, scales and biases, sizes."""

    _fields_ = [
        *((name, _ptr) for name in ("in_panels", "ql_taps", "ql_bias", "qe_taps", "qe_bias", "d2e_scale")),
        *((name, _ptr) for name in ("d2e_bias", "out_panels")),
        *((name, _i64) for name in ("L", "enc_dim", "dec_dim", "out_buf")),
    ]


def _contiguous(*tensors: Tensor) -> None:
    if not all(t.is_contiguous() for t in tensors):
        raise ValueError("the DCC kernels need contiguous tensors")


def dcc_front(
    model: DCCModel, stream: Tensor, layers: ctypes.Array, label: Tensor, outputs: tuple[Tensor, ...], work: Tensor
) -> None:
    """A streamed chunk's samples `stream` (batch, (n + 2) L), unit stride along time, -> `outputs` (x, l,
    q, memory): in_conv, the encoder (`layers`, as `dcc_step`, its context buffers advanced), l = e * label
    (batch, enc_dim), and the projections to the decoder; x, l (batch, n, enc_dim), q, memory (batch, n,
    dec_dim), all contiguous; `work`: 3 * x.numel() floats."""
    x = outputs[0]
    _contiguous(label, *outputs, work)
    if stream.stride(-1) != 1 or work.numel() < 3 * x.numel():
        raise ValueError("dcc_front needs samples of unit stride and 3 * x.numel() floats of work")
    batch, n = x.shape[:2]
    function = library().tse_dcc_front_f32
    if function(batch, n, ctypes.byref(model), stream.data_ptr(), stream.stride(0), len(layers), layers,
                label.data_ptr(), *(t.data_ptr() for t in (*outputs, work))):  # fmt: skip
        raise ValueError(f"tse_dcc_front_f32 takes at most {MAX_CHANNELS} channels")


def _back_work(model: DCCModel, batch: int, n: int) -> int:
    """Floats of working memory `tse_dcc_back_f32` needs for n frames of `batch` rows: out_conv's responses to the
    out_buf frames before them and to them."""
    return batch * (n + model.out_buf) * (model.out_buf + 1) * model.L


def dcc_back(model: DCCModel, x: Tensor, l: Tensor, decoded: Tensor, buffer: ContextBuffer, out: Tensor) -> None:  # noqa: E741
    """The chunk's output samples `out` (batch, n * L) from x, l (batch, n, enc_dim) and the decoder's output
    (batch, n, dec_dim), all contiguous: the mask, out_conv over `buffer` (its context buffer: the last
    out_buf_len masked frames; advanced) and tanh."""
    _contiguous(x, l, decoded, buffer.buffer, out)
    batch, n = x.shape[:2]
    work = working(x, (_back_work(model, batch, n),))
    end = ctypes.c_int64(buffer.end)
    library().tse_dcc_back_f32(batch, n, ctypes.byref(model), x.data_ptr(), l.data_ptr(), decoded.data_ptr(),
                               buffer.buffer.data_ptr(), buffer.buffer.shape[1], ctypes.byref(end), work.data_ptr(),
                               out.data_ptr())  # fmt: skip
    buffer.end = end.value


class DCCStream(ctypes.Structure):
    """A streamer's chunk through WaveMamba (a DCC extractor with a CrossMamba decoder) for `dcc_chunk` (kernels.c's
    `tse_dcc_stream`): the `DCCModel`, the encoder's `DCCLayer`s, the decoder's `MambaBlock` and state, the label,
    the input's and out_conv's context buffers with their ends, and the working memory (`dcc_chunk_work`) for
    chunks of up to `max_frames` frames of `batch` rows."""

    _fields_ = [
        *((name, _ptr) for name in ("model", "layers", "decoder", "label", "samples", "frames", "conv", "ssm", "work")),
        *((name, _i64) for name in ("n_layers", "batch", "max_frames", "samples_capacity", "samples_end")),
        *((name, _i64) for name in ("frames_capacity", "frames_end")),
    ]


def dcc_chunk_work(model: DCCModel, block: MambaBlock, batch: int, frames: int) -> int:
    """Floats of working memory `dcc_chunk` needs for chunks of up to `frames` frames of `batch` rows: the stages'
    outputs, then the largest of their working memories."""
    rows = batch * frames
    stages = (3 * rows * model.enc_dim, mamba_work(block, rows), _back_work(model, batch, frames))
    return rows * (2 * model.enc_dim + 3 * model.dec_dim) + max(stages)


def dcc_chunk(stream: DCCStream, chunk: Tensor, out: Tensor) -> None:
    """A streamed chunk's new samples `chunk` (batch, n L) (whole frames), unit stride along time, -> its output
    samples `out` (batch, n L) contiguous, through `stream` (its ends advanced): the whole WaveMamba chunk in one
    call."""
    if chunk.stride(-1) != 1 or not out.is_contiguous() or out.shape[-1] != chunk.shape[-1]:
        raise ValueError("dcc_chunk needs samples of unit stride and a contiguous output of their size")
    batch, samples = chunk.shape
    if library().tse_dcc_chunk_f32(batch, samples, ctypes.byref(stream), chunk.data_ptr(), chunk.stride(0),
                                   out.data_ptr()):  # fmt: skip
        raise ValueError(f"tse_dcc_chunk_f32: {samples} samples of {batch} rows do not fit this stream")


def dcc_label(model: DCCModel, e: Tensor, label: Tensor, outputs: tuple[Tensor, Tensor, Tensor]) -> None:
    """The encoder's output e (batch, n, enc_dim) -> `outputs` (l, q, memory): l = e * label (batch, enc_dim),
    q = proj_e2d_l(l), memory = proj_e2d_e(e); l (batch, n, enc_dim), q and memory (batch, n, dec_dim); all
    contiguous. One pass over the frames, for blocks of any length."""
    _contiguous(e, label, *outputs)
    batch, n = e.shape[:2]
    sizes = [(batch, n, model.enc_dim), (batch, model.enc_dim)] + [(batch, n, model.dec_dim)] * 2
    if [tuple(t.shape) for t in (e, label, *outputs[1:])] != sizes or outputs[0].shape != e.shape:
        raise ValueError("dcc_label: e, label, l, q, memory do not match the model's widths")
    library().tse_dcc_label_f32(batch, n, ctypes.byref(model), e.data_ptr(), label.data_ptr(),
                                *(t.data_ptr() for t in outputs), threads(e.numel()))  # fmt: skip


def dcc_mask(model: DCCModel, x: Tensor, l: Tensor, decoded: Tensor, masked: Tensor) -> None:  # noqa: E741
    """masked = x * (l + proj_d2e(decoded)): x, l (batch, n, enc_dim) and decoded (batch, n, dec_dim)
    contiguous, into `masked` (batch, n, enc_dim), whose frames are contiguous within each batch row (a slice of
    a longer buffer along time is)."""
    _contiguous(x, l, decoded, masked[0])
    batch, n, enc = x.shape
    if enc != model.enc_dim or l.shape != x.shape or decoded.shape != (batch, n, model.dec_dim):
        raise ValueError("dcc_mask: x, l, decoded do not match the model's widths")
    if masked.shape != x.shape or masked.stride(1) != enc:
        raise ValueError("dcc_mask writes masked frames of x's shape, contiguous within each batch row")
    library().tse_dcc_mask_f32(batch, n, ctypes.byref(model), x.data_ptr(), l.data_ptr(), decoded.data_ptr(),
                               masked.data_ptr(), masked.stride(0), threads(x.numel()))  # fmt: skip


def dcc_overlap(model: DCCModel, segments: Tensor, out: Tensor) -> None:
    """out_conv's responses `segments` (batch, out_buf + n, (out_buf + 1) L) to the out_buf frames before a block
    and to its n frames -> the block's output samples `out` (batch, n * L): overlap-add and tanh; contiguous."""
    _contiguous(segments, out)
    batch, n = out.shape[0], out.shape[-1] // model.L
    if segments.shape != (batch, n + model.out_buf, (model.out_buf + 1) * model.L):
        raise ValueError(f"dcc_overlap: segments {tuple(segments.shape)} do not match {n} frames of output")
    library().tse_dcc_overlap_f32(batch, n, ctypes.byref(model), segments.data_ptr(), out.data_ptr(),
                                  threads(out.numel() * (model.out_buf + 1)))  # fmt: skip
