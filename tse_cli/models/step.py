"""A causal DCC model's streaming step as a function of explicit tensors: the graph that `tse export` writes.

`StreamingStep(model, frames)` is one step of `CausalStreamer` with its state taken apart:

    forward(chunk (batch, frames * L), query (batch, label_len), [valid (frames,),] *states)
        -> (out (batch, frames * L), *new states)

`frames` must be a multiple of the decoder's granularity (Waveformer 13, WaveMamba 1), so that every step
decodes whole groups and emits exactly `frames * L` samples. Decoders that look ahead inside a group
(granularity > 1: Waveformer) also take `valid`, 1 for the frames of the input and 0 for those past its end:
`forward` pads the last group's decoder input with zero frames, and so does the step where `valid` is 0 (only
the last step of a stream has any). WaveMamba's decoder is causal frame by frame and takes no `valid`.

The states, in the order of `state_names()`, are `samples` (batch, 2L) (the input samples before the chunk),
the encoder's `encoder.i` (batch, context_i, enc_dim), the decoder's (`decoder.i` context frames for
Waveformer, `decoder.conv` and `decoder.ssm` for WaveMamba's CrossMamba block) and `synthesis` (batch,
out_buf_len, enc_dim); all start at zero.

Alignment with `forward`, which pads the input with L zeros in front: before the first step, the first L input
samples go into the last L of `samples` (its first L stay zero, that padding), and the chunks continue from
input sample L. Step j then computes frames j*frames ... (j+1)*frames - 1 and returns output samples
[j*frames*L, (j+1)*frames*L). At the end of the input, zero chunks complete the last frames (`forward` pads with
zeros too) and the output is cut at the input's length. `tse_cli.onnx_runtime.OnnxStreamer` does exactly this.

The step runs the model's own stages (`analyze`, `mask_gen`, the decoder, `synthesize`) with
`FunctionalContext`s in place of the streamer's buffers, on a copy of the model with the `naive` scan (plain
tensor operations: a traceable graph, unrolled over the chunk's frames).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from tse_cli.models.crossmamba import set_scan_backend
from tse_cli.models.dcc import DCCExtractor
from tse_cli.models.streaming import ContextBuffer, FunctionalContext


def _flatten(name: str, state: Any) -> list[tuple[str, Tensor]]:
    """(name, tensor) pairs of a streaming state: context buffers, named tuples of tensors, lists of either."""
    if isinstance(state, ContextBuffer | FunctionalContext):
        return [(name, state.current())]
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return [(f"{name}.{field}", tensor) for field, tensor in zip(state._fields, state, strict=True)]
    if isinstance(state, list | tuple):
        return [pair for i, part in enumerate(state) for pair in _flatten(f"{name}.{i}", part)]
    raise TypeError(f"{name}: cannot take a streaming state of type {type(state).__name__} apart")


def _rebuild(template: Any, tensors: Iterator[Tensor]) -> Any:
    """A state shaped like `template` from the next tensors: `FunctionalContext`s for context buffers, clones for
    named tuples (which the model updates in place)."""
    if isinstance(template, ContextBuffer):
        return FunctionalContext(next(tensors))
    if isinstance(template, tuple) and hasattr(template, "_fields"):
        return type(template)(*(next(tensors).clone() for _ in template._fields))
    return [_rebuild(part, tensors) for part in template]


class StreamingStep(nn.Module):
    """One streaming step of `model` over `frames` frames (see the module docstring)."""

    def __init__(self, model: DCCExtractor, frames: int):
        super().__init__()
        granularity = model.mask_gen.decoder.granularity
        if frames < 1 or frames % granularity:
            raise ValueError(f"a step must be a positive multiple of {granularity} frames, got {frames}")
        self.model = copy.deepcopy(model).eval()
        set_scan_backend(self.model, "naive")
        self.frames, self.L = frames, model.L
        self.takes_valid = granularity > 1
        weight = model.in_conv[0].weight
        self._templates = self._initial(1, weight.device, weight.dtype)

    def _initial(self, batch: int, device: torch.device, dtype: torch.dtype) -> tuple[Any, Any, Any]:
        mask_gen = self.model.mask_gen
        return (
            mask_gen.encoder.init_state(batch, device, dtype),
            mask_gen.decoder.init_state(batch, device, dtype),
            [ContextBuffer(batch, self.model.enc_dim, self.model.out_buf_len, device=device, dtype=dtype)],
        )

    @property
    def chunk_samples(self) -> int:
        """Input (and output) samples per step."""
        return self.frames * self.L

    def state_names(self) -> list[str]:
        """The states' names, in the order `forward` takes and returns them."""
        return [name for name, _ in self.initial_states(1)]

    def initial_states(self, batch: int) -> list[tuple[str, Tensor]]:
        """(name, zero tensor) for every state of a stream of `batch` rows, in order."""
        weight = self.model.in_conv[0].weight
        encoder, decoder, synthesis = self._initial(batch, weight.device, weight.dtype)
        samples = torch.zeros(batch, 2 * self.L, device=weight.device, dtype=weight.dtype)
        pairs = [("samples", samples), *_flatten("encoder", encoder), *_flatten("decoder", decoder)]
        return [*pairs, ("synthesis", synthesis[0].current())]

    def forward(self, chunk: Tensor, query: Tensor, *inputs: Tensor) -> tuple[Tensor, ...]:
        """chunk (batch, frames * L), query (batch, label_len), [valid (frames,),] states -> (out (batch,
        frames * L), *new states)."""
        valid, states = (inputs[0], inputs[1:]) if self.takes_valid else (None, inputs)
        model, tensors = self.model, iter(states[1:])
        encoder, decoder, synthesis = (_rebuild(template, tensors) for template in self._templates)
        stream = torch.cat([states[0], chunk], dim=-1)  # (batch, (2 + frames) L): every window complete
        x = model.analyze(stream)
        l, q, memory = model.mask_gen.encode(x, model.label_embedding(query), encoder)  # noqa: E741
        if valid is not None:  # the zero frames `forward` pads the decoder's last group with
            q, memory = q * valid[:, None], memory * valid[:, None]
        decoded, decoder = model.mask_gen.decoder.decode(q, memory, decoder)
        out = model.synthesize(x * model.mask_gen.mask(l, decoded), synthesis)[:, 0]
        new = [stream[:, stream.shape[-1] - 2 * self.L :]]
        new += [t for part in (encoder, decoder, synthesis) for _, t in _flatten("", part)]
        return (out, *new)
