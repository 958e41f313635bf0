"""Streaming helpers shared by the causal models: a bounded context buffer over the time axis.

Causal layers with a receptive field of `context` past frames (dilated convolutions, the chunked transformer's
context frames, the output transposed convolution) all need the same operation per chunk: "give me the last
`context` steps followed by these `n` new ones as one contiguous tensor". `ContextBuffer` does that in amortised
O(n) time and O(context) memory, however long the stream runs and whatever the chunk size.

Streamed chunks are short (13 frames for a 416-sample chunk), so per-operation costs dominate: weights are
used in derived forms (`transposed`, packed copies) computed once per weight version (`derived`); the products
that use them are `tse_cli.models.products.linear`.

Working memory: while a streamer runs a chunk inside `Scratch.active()`, `scratch(...)` hands out tensors that
are reused from chunk to chunk (the layers pass them as `out=`); outside it returns None and the same calls
allocate as usual, which is what the offline forward and training do. `count_allocations` measures the rest.
"""

from __future__ import annotations

import contextlib
import math
import operator
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor


class ContextBuffer:
    """The last `context` steps of a `(batch, time, channels)` stream, initially zeros (causal zero padding).

    `extend(x)` appends `x` and returns `[last context steps | x]`, shape `(batch, context + n, channels)`, as a view
    into a preallocated buffer: the context is moved to the front only when the buffer fills up, so per call the
    work is proportional to `n` (amortised), not to `context`. Chunks longer than the spare capacity go through a
    one-off concatenation instead, so the buffer itself never grows. The returned view is only valid until the
    next `extend`.
    """

    def __init__(
        self, batch: int, channels: int, context: int, *, device: torch.device, dtype: torch.dtype, spare: int = 64
    ):
        self.context = context
        self.buffer = torch.zeros(batch, 2 * context + spare, channels, device=device, dtype=dtype)
        self.end = context  # steps [end - context, end) are the current context

    def extend(self, x: Tensor, *more: Tensor) -> Tensor:
        """Append `x` (batch, n, channels), then any `more` pieces; return (batch, context + all new, channels):
        the old context, then the new steps."""
        n = x.shape[1] + sum(t.shape[1] for t in more) if more else x.shape[1]
        context, capacity = self.context, self.buffer.shape[1]
        if self.end + n > capacity:
            if context + n > capacity:  # a big chunk: concatenate once, keep only its tail
                out = torch.cat((self.buffer[:, self.end - context : self.end], x, *more), dim=1)
                self.buffer[:, :context] = out[:, out.shape[1] - context :]
                self.end = context
                return out
            tail = self.buffer[:, self.end - context : self.end]
            self.buffer[:, :context] = tail.clone() if self.end < 2 * context else tail
            self.end = context
        start = self.end
        for piece in (x, *more):
            self.buffer[:, self.end : self.end + piece.shape[1]] = piece
            self.end += piece.shape[1]
        return self.buffer[:, start - context : self.end]

    def current(self) -> Tensor:
        """The current context, (batch, context, channels) (a view, valid until the next `extend` or `advance`)."""
        return self.buffer[:, self.end - self.context : self.end]

    def advance(self, x: Tensor) -> None:
        """Append `x` (batch, n, channels) without returning `[context | x]`: copies at most `context` steps."""
        if x.shape[1] < self.context:
            self.extend(x)
        else:
            self.buffer[:, : self.context] = x[:, x.shape[1] - self.context :]
            self.end = self.context


class FunctionalContext:
    """`ContextBuffer`'s `extend` without in-place state: the context is a tensor given at creation, and after
    `extend(x)` the new context is `current()`. For tracing a streaming step into a graph whose state tensors are
    inputs and outputs (`tse_cli.models.step`)."""

    def __init__(self, context: Tensor):
        self.context, self.state = context.shape[1], context

    def extend(self, x: Tensor, *more: Tensor) -> Tensor:
        """(batch, context + new, channels): the context, then `x` and `more`; the context moves to its tail."""
        out = torch.cat((self.state, x, *more), dim=1)
        self.state = out[:, out.shape[1] - self.context :]
        return out

    def advance(self, x: Tensor) -> None:
        """Append `x` without returning `[context | x]`."""
        self.extend(x)

    def current(self) -> Tensor:
        """The context after the last `extend` or `advance`, (batch, context, channels)."""
        return self.state


def causal_depthwise(
    x: Tensor, past: Tensor | None, weight: Tensor, bias: Tensor | None, dilation: int = 1, out: Tensor | None = None
) -> Tensor:
    """Causal depthwise convolution over time of new frames x (batch, n, channels) after `past` (batch,
    (k - 1) * dilation, channels), or after zeros when `past` is None: (batch, n, channels), time-major.

    weight (channels, 1, k) as `nn.Conv1d(groups=channels)` holds it. As k multiply-adds over shifted views,
    each tap split between x and `past` where it reaches back into it, so that nothing is concatenated or padded
    (a block of 2048 frames at 512 channels copied once per layer otherwise); `out`, where the result goes.
    """
    k, n = weight.shape[-1], x.shape[1]
    taps = transposed(weight)  # (k, channels); tap j reaches (k - 1 - j) * dilation frames back
    y = torch.mul(x, taps[-1], out=out) if bias is None else torch.addcmul(bias, x, taps[-1], out=out)
    for j in range(k - 1):
        shift = (k - 1 - j) * dilation
        if shift < n:
            y[:, shift:].addcmul_(x[:, : n - shift], taps[j])
        if past is not None:
            reach = min(shift, n)
            start = past.shape[1] - shift
            y[:, :reach].addcmul_(past[:, start : start + reach], taps[j])
    return y


# working memory reused from chunk to chunk


class Scratch:
    """The working memory of one streamer (on one device): while `active()`, `scratch` hands out its tensors.

    Slot i is the i-th tensor asked for since the chunk started; it keeps its storage from chunk to chunk and
    grows to the largest size asked of it, so a stream of equal chunks allocates nothing after its first chunk.
    Nothing handed out may outlive the chunk (state is copied into its own buffers, results returned to the
    caller are allocated). Memory: one chunk's intermediates, which is why streamers use it for short chunks only.
    """

    def __init__(self) -> None:
        self.flat: list[Tensor] = []  # slot i's storage, one dimension (never handed out itself)
        self.slots: list[Tensor] = []  # the view of it that slot i handed out last
        self.next = 0

    def resize(
        self, index: int, shape: Sequence[int], device: torch.device, dtype: torch.dtype, swap: bool = False
    ) -> Tensor:
        """Slot `index` (the next one, or an existing one) as a tensor of `shape`, growing its storage if needed;
        `swap`: laid out with the last two dimensions swapped (a transposed view of a contiguous tensor)."""
        shape = tuple(shape)
        stored = (*shape[:-2], shape[-1], shape[-2]) if swap else shape
        numel = math.prod(shape)
        if index == len(self.flat):
            self.flat.append(torch.empty(0, device=device, dtype=dtype))
            self.slots.append(self.flat[index])
        flat = self.flat[index]
        if flat.dtype != dtype or flat.device != device or flat.numel() < numel:
            flat = self.flat[index] = torch.empty(numel, device=device, dtype=dtype)
        tensor = flat[:numel].view(stored)
        self.slots[index] = tensor.transpose(-1, -2) if swap else tensor
        return self.slots[index]

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Hand out this scratch's tensors from the first slot on (one chunk), in this thread."""
        previous, _ACTIVE.scratch = getattr(_ACTIVE, "scratch", None), self
        self.next = 0
        try:
            yield
        finally:
            _ACTIVE.scratch = previous


_ACTIVE = threading.local()


def scratch(like: Tensor, shape: Sequence[int] | None = None, dtype: torch.dtype | None = None) -> Tensor | None:
    """A reusable tensor of `shape` for an `out=` argument inside `Scratch.active()`, else None.

    Device from `like`, dtype `dtype` or `like`'s. Without `shape`, `like`'s shape, and its layout when `like` is
    a transposed view (so that element-wise operations keep running over contiguous rows). With None as `out=`,
    operations allocate their result as usual. Called for most operations of a streamed chunk, so the common case
    (the slot fits) is kept short.
    """
    active = getattr(_ACTIVE, "scratch", None)
    if active is None:
        return None
    as_like, shape = shape is None, like.shape if shape is None else shape
    dtype = like.dtype if dtype is None else dtype
    index = active.next
    active.next = index + 1
    if index < len(active.slots):
        last = active.slots[index]
        if last.shape == shape and last.dtype == dtype:
            return last
    swap = as_like and like.dim() >= 2 and not like.is_contiguous() and like.mT.is_contiguous()
    return active.resize(index, shape, like.device, dtype, swap)


def working(like: Tensor, shape: Sequence[int]) -> Tensor:
    """`scratch(like, shape)` inside a streamer's chunk, else a new tensor of `shape` (like's dtype and device)."""
    out = scratch(like, shape)
    return torch.empty(shape, dtype=like.dtype, device=like.device) if out is None else out


class reused_scratch:  # noqa: N801 (used like a function: `with reused_scratch():`)
    """Inside, scratch tensors are handed out as usual; after it, the same ones are handed out again. For a block
    (an encoder layer) whose result is not one of them: consecutive blocks then share their working memory,
    which stays in the CPU cache."""

    def __enter__(self) -> None:
        self.active = getattr(_ACTIVE, "scratch", None)
        self.mark = None if self.active is None else self.active.next

    def __exit__(self, *exc: object) -> None:
        if self.active is not None:
            self.active.next = self.mark


def contiguous(x: Tensor) -> Tensor:
    """`x.contiguous()`, copied into a scratch tensor when one is available."""
    if x.is_contiguous():
        return x
    out = scratch(x)
    return x.contiguous() if out is None else out.copy_(x)


# tensors derived from parameters, cached while the parameters do not change

# (id(tensor), kind) -> (weak reference to the tensor, (version, data pointer) of it and of the tensors it was
# derived with, the result)
_DERIVED: dict[tuple[int, str], tuple[weakref.ref, tuple[tuple[int, int], ...], Tensor]] = {}


def derived(tensor: Tensor, kind: str, compute: Callable[..., Tensor], *also: Tensor) -> Tensor:
    """`compute(tensor, *also)`, cached per (tensor, kind) while autograd is off (streaming calls it once per chunk).

    The cache is refreshed when `tensor` or one of `also` changes (its version counter, bumped by every in-place
    update such as an optimizer step or `load_state_dict`, or its storage) and dropped with `tensor`. Under
    autograd, or for inference tensors (which have no version counter), `compute` runs every time.
    """
    if torch.is_grad_enabled() and (tensor.requires_grad or any(t.requires_grad for t in also)):
        return compute(tensor, *also)
    key = (id(tensor), kind)
    cached = _DERIVED.get(key)  # never an inference tensor's (their _version cannot be read): checked below
    if cached is not None and cached[0]() is tensor:  # (without `also`, the one comparison streaming pays for)
        versions = ((tensor._version, tensor.data_ptr()),) if not also else _versions(tensor, *also)
        if cached[1] == versions:
            return cached[2]
    if tensor.is_inference() or any(t.is_inference() for t in also):
        return compute(tensor, *also)
    with torch.inference_mode(False), torch.no_grad():
        result = compute(tensor.detach(), *(t.detach() for t in also))
    ref = weakref.ref(tensor, lambda _, key=key: _DERIVED.pop(key, None))
    _DERIVED[key] = (ref, _versions(tensor, *also), result)
    return result


def _versions(*tensors: Tensor) -> tuple[tuple[int, int], ...]:
    return tuple((t._version, t.data_ptr()) for t in tensors)


class Watched:
    """The parameters of `modules` as they are now, for what is made from several of them at once (the CPU
    kernels' plans): `fresh()` is False once any was replaced or changed in place (identity and version counter
    of each). Inference tensors (parameters made under `torch.inference_mode`) have no version counter: then
    `trackable` is False and nothing should be made from them."""

    def __init__(self, *modules: torch.nn.Module):
        self.owners = [(m._parameters, name) for module in modules for m in module.modules() for name in m._parameters]
        self.tensors = [params[name] for params, name in self.owners]
        self.present = [p for p in self.tensors if p is not None]
        self.trackable = not any(p.is_inference() for p in self.present)
        self.versions = [p._version for p in self.present] if self.trackable else None

    def fresh(self) -> bool:
        """Checked on every streamed chunk: about 12 us for the 80 parameters of a ten-layer encoder (reading a
        version counter costs 70 ns)."""
        if not all(map(operator.is_, [params.get(name) for params, name in self.owners], self.tensors)):
            return False
        return self.versions is None or [p._version for p in self.present] == self.versions


def current_plan(plans: weakref.WeakKeyDictionary, owner: Any, make: Callable[[Any], Any]) -> Any:
    """`plans[owner]` (a kernels plan with a `watched`), made by `make(owner)` when there is none yet or a parameter
    it was made from has changed since (`Watched.fresh`)."""
    plan = plans.get(owner)
    if plan is None or not plan.watched.fresh():
        plan = plans[owner] = make(owner)
    return plan


def _transpose(weight: Tensor) -> Tensor:
    return weight.reshape(weight.shape[0], -1).t()


def transposed(weight: Tensor) -> Tensor:
    """A weight (out, in) or (out, in, 1) (a kernel-1 conv), or (channels, 1, k) (depthwise) -> (in or k, out).

    Without autograd the result is a cached contiguous copy (see `derived`); under autograd a plain view.
    """
    if torch.is_grad_enabled() and weight.requires_grad:
        return _transpose(weight)
    return derived(weight, "transposed", lambda w: _transpose(w).contiguous())


# measuring allocations


class Allocations(NamedTuple):
    """Tensor-memory allocations seen while a function ran: how many, their bytes, and how many per operator
    (the outermost profiled operator running when each was made: the one called from Python)."""

    count: int
    bytes: int
    by_op: dict[str, int]


def count_allocations(fn: Callable[[], object]) -> Allocations:
    """Run `fn()` under the PyTorch profiler and count the allocations made by PyTorch's CPU allocator.

    That includes everything an operator allocates inside its kernel (LayerNorm's mean and rstd, the 0-dim
    tensor a Python scalar is wrapped in), not just the tensors it returns; memory that third-party libraries
    (BLAS, oneDNN) manage themselves is not counted. For measurement only: the profiler slows `fn` down.
    """
    from torch.profiler import ProfilerActivity, profile

    with warnings.catch_warnings():  # "memory block allocated before profiling started" notes
        warnings.simplefilter("ignore")
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
    events = prof.profiler.kineto_results.events()
    # a sweep over time: operators nest, so the open ones form a stack (at equal starts: outer operators first,
    # then inner ones, then memory events)
    timeline = sorted(
        (e.start_ns(), e.name() == "[memory]", -e.end_ns(), e.name(), e.nbytes())
        for e in events
        if e.name() != "[memory]" or e.nbytes() > 0
    )
    by_op: dict[str, int] = {}
    count = total = 0
    stack: list[tuple[int, str]] = []  # (end, name) of the operators running
    for start, is_memory, minus_end, name, nbytes in timeline:
        while stack and stack[-1][0] < start:
            stack.pop()
        if not is_memory:
            stack.append((-minus_end, name))
            continue
        count, total = count + 1, total + nbytes
        op = stack[0][1] if stack else "(no operator)"
        by_op[op] = by_op.get(op, 0) + 1
    return Allocations(count, total, dict(sorted(by_op.items(), key=lambda item: -item[1])))
