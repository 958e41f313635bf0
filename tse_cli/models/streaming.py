"""Streaming helpers shared by the causal models: a bounded context buffer over the time axis.

Causal layers with a receptive field of `context` past frames (dilated convolutions, the chunked transformer's
context frames, the output transposed convolution) all need the same operation per chunk: "give me the last
`context` steps followed by these `n` new ones as one contiguous tensor". `ContextBuffer` does that in amortised
O(n) time and O(context) memory, however long the stream runs and whatever the chunk size.
"""

from __future__ import annotations

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

    def extend(self, x: Tensor) -> Tensor:
        """Append `x` (batch, n, channels); return (batch, context + n, channels): the old context then `x`."""
        n, context, capacity = x.shape[1], self.context, self.buffer.shape[1]
        if self.end + n > capacity:
            if context + n > capacity:  # a big chunk: concatenate once, keep only its tail
                out = torch.cat((self.buffer[:, self.end - context : self.end], x), dim=1)
                self.buffer[:, :context] = out[:, out.shape[1] - context :]
                self.end = context
                return out
            tail = self.buffer[:, self.end - context : self.end]
            self.buffer[:, :context] = tail.clone() if self.end < 2 * context else tail
            self.end = context
        self.buffer[:, self.end : self.end + n] = x
        self.end += n
        return self.buffer[:, self.end - context - n : self.end]
