"""The dilated-causal-conv (DCC) chassis of Waveformer and WaveMamba, and the generic `CausalStreamer`.

mixture (batch, 1, samples) -> in_conv (kernel 3L, stride L: one frame per L samples, L samples of lookahead)
-> dilated causal conv encoder -> label embedding multiplied in -> a causal decoder (query from the
label-weighted encoding, memory from the encoding) -> mask on the in_conv output -> transposed conv -> tanh.

`DCCExtractor` is that pipeline with the decoder left open: `tse_cli.models.waveformer.Waveformer` plugs in the
published chunked transformer, `tse_cli.models.wavemamba.WaveMamba` a CrossMamba block. Parameter and buffer
names follow the published `src/training/dcc_tf.py`, so its `model_state_dict` loads with `strict=True`.

Every stateful stage takes an optional streaming state; `None` means "start from silence", which is the
offline forward. `CausalStreamer` feeds the same stages chunk by chunk, so the two agree to float rounding.
Between in_conv and out_conv, frames are laid out (batch, frames, channels): LayerNorm, the 1x1 convs (as
matmuls) and the decoders work on that layout directly, and the depthwise dilated convs run as shifted
multiply-adds, which keeps the per-chunk cost of streaming low. The weights keep their published shapes.
(About 700 lines: the streamer drives the chassis' stages one by one, or a WaveMamba chunk in one kernel call,
and is read with them.)
"""

from __future__ import annotations

import contextlib
import ctypes
import weakref
from collections import OrderedDict
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tse_cli.models import kernels
from tse_cli.models.products import linear
from tse_cli.models.streaming import (
    ContextBuffer,
    Scratch,
    Watched,
    causal_depthwise,
    contiguous,
    current_plan,
    derived,
    reused_scratch,
    scratch,
    transposed,
    working,
)

# helpers


def extend(state: list[ContextBuffer] | None, index: int, x: Tensor, context: int) -> Tensor:
    """`x` (batch, n, channels) preceded by its `context` past frames: zeros offline, the stream's past otherwise."""
    return F.pad(x, (0, 0, context, 0)) if state is None else state[index].extend(x)


def context_buffers(
    contexts: list[int], batch: int, channels: int, device: torch.device, dtype: torch.dtype
) -> list[ContextBuffer]:
    """One zero-initialised `ContextBuffer` per context length."""
    return [ContextBuffer(batch, channels, c, device=device, dtype=dtype) for c in contexts]


def pointwise(x: Tensor, conv: nn.Conv1d) -> Tensor:
    """A kernel-1 (grouped) `nn.Conv1d` applied to x (batch, frames, in) -> (batch, frames, out)."""
    if conv.groups == 1:
        return linear(x, conv.weight, conv.bias)
    groups, (out_dim, per_group, _) = conv.groups, conv.weight.shape
    if out_dim == groups:  # one output per group: a sum of per_group strided products
        taps = transposed(conv.weight)  # (per_group, out_dim)
        y = torch.addcmul(conv.bias, x[..., 0::per_group], taps[0], out=scratch(x, (*x.shape[:-1], out_dim)))
        for i in range(1, per_group):
            y.addcmul_(x[..., i::per_group], taps[i])
        return y
    weight = conv.weight.view(groups, out_dim // groups, per_group)
    if per_group == 1:  # every output channel scales one input channel
        y = torch.mul(x[..., None], weight[..., 0], out=scratch(x, (*x.shape, out_dim // groups)))
    else:
        y = torch.einsum("btgi,goi->btgo", x.unflatten(-1, (groups, per_group)), weight)
    return y.flatten(-2).add_(conv.bias)


class GroupedProjection(nn.Sequential):
    """1x1 grouped conv + ReLU between encoder and decoder widths (published as Sequential(Conv1d, ReLU))."""

    def __init__(self, in_dim: int, out_dim: int, groups: int):
        super().__init__(nn.Conv1d(in_dim, out_dim, kernel_size=1, groups=groups), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        """(batch, frames, in_dim) -> (batch, frames, out_dim)."""
        return pointwise(x, self[0]).relu_()

    def uncounted_macs(self, args: tuple[Tensor, ...], output: Tensor) -> int:
        """MACs of the element-wise paths of `pointwise` (for `tse_cli.models.complexity`): one output per group
        (per_group products each) or one input per group."""
        conv = self[0]
        out_dim, per_group = conv.weight.shape[:2]
        if out_dim == conv.groups:
            return output.numel() * per_group
        return output.numel() if per_group == 1 else 0


# encoder: dilated causal depthwise-separable convs


class DepthwiseSeparableConv(nn.Module):
    """Depthwise dilated conv (no padding) -> LN -> ReLU -> 1x1 conv -> LN -> ReLU (published `layers.{0,1,3,4}`).

    Frames are (batch, frames, channels); the depthwise conv runs as `kernel_size` shifted multiply-adds, which
    is much faster than a grouped conv for the short chunks of streaming (and than its (channels, time) layout
    on long blocks).
    """

    def __init__(self, channels: int, dilation: int, kernel_size: int = 3):
        super().__init__()
        self.dilation, self.kernel_size = dilation, kernel_size
        self.context = (kernel_size - 1) * dilation
        self.layers = nn.ModuleDict(
            {
                "0": nn.Conv1d(channels, channels, kernel_size, groups=channels, dilation=dilation),
                "1": nn.LayerNorm(channels),
                "3": nn.Conv1d(channels, channels, kernel_size=1),
                "4": nn.LayerNorm(channels),
            }
        )

    def forward(self, x: Tensor, past: Tensor | None = None) -> Tensor:
        """New frames x (batch, n, channels) after `past` (batch, context, channels), the frames before them
        (zeros when None; context = (kernel_size - 1) * dilation) -> (batch, n, channels)."""
        depthwise, norm1, conv, norm2 = self.layers.values()
        out = scratch(x, x.shape)
        y = causal_depthwise(x, past, depthwise.weight, depthwise.bias, self.dilation, out=out)
        y = F.layer_norm(y, norm1.normalized_shape, norm1.weight, norm1.bias, norm1.eps).relu_()
        y = pointwise(y, conv)
        return F.layer_norm(y, norm2.normalized_shape, norm2.weight, norm2.bias, norm2.eps).relu_()

    def fused_front(self, x: Tensor, past: Tensor | None) -> Tensor:
        """`forward` up to the 1x1 product, through `tse_cli.models.kernels` (inference on a CPU): the depthwise
        conv with its LayerNorm and ReLU in one pass, then the product; `fused_back` finishes the layer."""
        depthwise, norm1, conv, _ = self.layers.values()
        return pointwise(kernels.depthwise(x, past, depthwise, self.dilation, "layer_norm_relu", norm1), conv)

    def fused_back(self, y: Tensor, residual: Tensor, out: Tensor | None) -> Tensor:
        """residual + relu(LayerNorm(y)) in one pass, into `out` (which may be `residual`), else a new tensor."""
        return kernels.norm(y, self.layers["4"], residual=residual, out=out)

    def uncounted_macs(self, args: tuple[Tensor, ...], output: Tensor) -> int:
        """MACs of the depthwise taps, which run as element-wise ops (for `tse_cli.models.complexity`)."""
        return output.numel() * self.kernel_size


class EncoderState(list):
    """The encoder's streaming state: one `ContextBuffer` per layer, and the plan of its fused step (the
    addresses `tse_cli.models.kernels.dcc_step` reads), made on the first chunk that runs it."""

    plan: _FusedPlan | None = None


class _FusedPlan:
    """The `kernels.DCCLayer`s of one encoder and one state, valid while `watched.fresh()` (no parameter of the
    encoder replaced or changed); keeps the derived weights it points to. `layers` is None for inference-tensor
    parameters (made under `torch.inference_mode`): the encoder then runs layer by layer, as before."""

    def __init__(self, encoder: DilatedCausalEncoder, state: EncoderState):
        self.watched = Watched(encoder)
        self.layers: ctypes.Array | None = None
        if not self.watched.trackable:
            return
        self.kept: list[Tensor] = []
        layers = []
        for layer, buffer in zip(encoder.dcc_layers, state, strict=True):
            depthwise, norm1, conv, norm2 = layer.layers.values()
            taps = transposed(depthwise.weight)
            packed, wide = kernels.panels(conv.weight), kernels.wide_panels(conv.weight)  # (chunks, blocks)
            self.kept += [taps, packed, wide]
            layers.append(
                kernels.DCCLayer(
                    *map(kernels.address, (taps, depthwise.bias, norm1.weight, norm1.bias, packed, wide, conv.bias)),
                    *map(kernels.address, (norm2.weight, norm2.bias, buffer.buffer)),
                    layer.kernel_size, layer.dilation, buffer.buffer.shape[1], buffer.context, buffer.end,
                    norm1.eps, norm2.eps,
                )
            )  # fmt: skip
        self.layers = (kernels.DCCLayer * len(layers))(*layers)


class DilatedCausalEncoder(nn.Module):
    """Residual stack of `num_layers` causal convs with dilation 2^i, each seeing (kernel-1)*2^i past frames."""

    MAX_LAYERS = 32  # layer i looks 2^i frames back: more layers than this only describe absurd receptive fields

    def __init__(self, channels: int, num_layers: int, kernel_size: int = 3):
        super().__init__()
        if not 1 <= num_layers <= self.MAX_LAYERS:
            raise ValueError(f"num_enc_layers must be 1 to {self.MAX_LAYERS} (layer i dilates 2^i), got {num_layers}")
        self.channels = channels
        self.contexts = [(kernel_size - 1) * 2**i for i in range(num_layers)]
        self.dcc_layers = nn.Sequential(
            OrderedDict((f"dcc_{i}", DepthwiseSeparableConv(channels, 2**i, kernel_size)) for i in range(num_layers))
        )

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> EncoderState:
        return EncoderState(context_buffers(self.contexts, batch, self.channels, device, dtype))

    def forward(self, x: Tensor, state: list[ContextBuffer] | None = None) -> Tensor:
        """(batch, frames, channels) -> same shape; `state` (from `init_state`) carries the past frames."""
        fused = kernels.usable(x)
        if fused and x.shape[1]:
            with self.fused_layers(state) as layers:
                if layers is not None:
                    return self._fused_step(x, layers)
        for i, layer in enumerate(self.dcc_layers):
            past = None if state is None else state[i].current()
            if fused:  # the input x is not ours to change: the first layer writes its output elsewhere
                target = x if i else scratch(x)  # (taken before the layer's reused working memory)
            with reused_scratch():  # the layer's working memory is free again after it
                y = layer.fused_front(x, past) if fused else layer(x, past)
                if state is not None:  # `past` (a view into the buffer) is read by now, x is not changed yet
                    state[i].advance(x)
                if fused:
                    x = layer.fused_back(y, x, target)
            if not fused:  # autograd keeps each layer's input for its backward pass: x changes in place only without
                x = x.add_(y) if i and not torch.is_grad_enabled() else torch.add(x, y, out=scratch(x))
        return x

    @contextlib.contextmanager
    def fused_layers(self, state: list[ContextBuffer] | None) -> Iterator[ctypes.Array | None]:
        """The plan of the fused step over `state` (`kernels.DCCLayer`s; made, or remade after a parameter
        changed), or None where it cannot run (no `EncoderState`, inference-tensor parameters), for kernel calls
        inside the `with`: the context buffers stay `ContextBuffer`s, their `end` goes into the plan before and
        comes back after, so that chunks the encoder runs layer by layer can come between."""
        layers = self.fused_plan(state)
        if layers is None:
            yield None
            return
        for layer, buffer in zip(layers, state, strict=True):
            layer.end = buffer.end
        try:
            yield layers
        finally:
            for layer, buffer in zip(layers, state, strict=True):
                buffer.end = layer.end

    def fused_plan(self, state: list[ContextBuffer] | None) -> ctypes.Array | None:
        """The `kernels.DCCLayer`s of the fused step over `state` (made, or remade after a parameter changed), or
        None (no `EncoderState`, inference-tensor parameters). Their `end`s are the buffers' as of the plan's
        making: callers copy them in and out around the kernels (`fused_layers`)."""
        if not isinstance(state, EncoderState):
            return None
        if state.plan is None or not state.plan.watched.fresh():
            state.plan = _FusedPlan(self, state)
        return state.plan.layers

    def _fused_step(self, x: Tensor, layers: ctypes.Array) -> Tensor:
        """`forward(x, state)` as one call of `kernels.dcc_step` through `layers` (from `fused_layers(state)`)."""
        x = contiguous(x)
        out = working(x, x.shape)
        kernels.dcc_step(layers, x, out)
        return out


# mask generator


class MaskGenerator(nn.Module):
    """Encoder, label integration, projections to/from the decoder width, and the decoder itself."""

    def __init__(self, enc_dim: int, num_enc_layers: int, dec_dim: int, decoder: nn.Module):
        super().__init__()
        self.encoder = DilatedCausalEncoder(enc_dim, num_enc_layers)
        self.proj_e2d_e = GroupedProjection(enc_dim, dec_dim, dec_dim)
        self.proj_e2d_l = GroupedProjection(enc_dim, dec_dim, dec_dim)
        self.proj_d2e = GroupedProjection(dec_dim, enc_dim, dec_dim)
        self.decoder = decoder

    def encode(self, x: Tensor, label: Tensor, state: list[ContextBuffer] | None = None) -> tuple[Tensor, ...]:
        """x (batch, frames, enc_dim), label (batch, enc_dim) -> (l, decoder query, decoder memory)."""
        return self.project(self.encoder(x, state), label)

    def project(self, e: Tensor, label: Tensor) -> tuple[Tensor, ...]:
        """The encoder's output e (batch, frames, enc_dim) -> (l = e * label, decoder query, decoder memory)."""
        l = torch.mul(label[:, None], e, out=scratch(e))  # noqa: E741 (the published name)
        return l, self.proj_e2d_l(l), self.proj_e2d_e(e)

    def mask(self, l: Tensor, decoded: Tensor) -> Tensor:  # noqa: E741
        """Skip connection: l + projected decoder output, (batch, frames, enc_dim)."""
        return torch.add(l, self.proj_d2e(decoded), out=scratch(l))


# the extractor


class _ModelPlan:
    """The `kernels.DCCModel` of an extractor (in_conv, the projections, out_conv), valid while `watched.fresh()`;
    keeps the derived weights it points to. `model` is None for inference-tensor parameters."""

    def __init__(self, extractor: DCCExtractor):
        mask_gen = extractor.mask_gen
        projections = (mask_gen.proj_e2d_l[0], mask_gen.proj_e2d_e[0], mask_gen.proj_d2e[0])
        self.watched = Watched(extractor.in_conv, extractor.out_conv, *projections)
        self.model: kernels.DCCModel | None = None
        if not self.watched.trackable:
            return
        down_l, down_e, up = projections
        self.kept = [
            kernels.panels(extractor.in_conv[0].weight),
            transposed(down_l.weight), down_l.bias, transposed(down_e.weight), down_e.bias,
            up.weight.reshape(-1), up.bias,
            kernels.pack_panels(extractor.out_conv[0].weight[:, 0].t()),
        ]  # fmt: skip
        sizes = (extractor.L, extractor.enc_dim, extractor.dec_dim, extractor.out_buf_len)
        self.model = kernels.DCCModel(*map(kernels.address, self.kept), *sizes)


_MODEL_PLANS: weakref.WeakKeyDictionary[DCCExtractor, _ModelPlan] = weakref.WeakKeyDictionary()


def _model_plan(extractor: DCCExtractor) -> kernels.DCCModel | None:
    """The extractor's `_ModelPlan` model (made, or remade after a parameter changed), or None."""
    return current_plan(_MODEL_PLANS, extractor, _ModelPlan).model


class DCCExtractor(nn.Module):
    """The Waveformer pipeline around a pluggable causal decoder (see the module docstring).

    The decoder provides `granularity` (frames it needs before it can emit), `init_state(batch, device, dtype)`
    and `decode(query, memory, state=None) -> (out, state)` on (batch, frames, dec_dim). A decoder of granularity
    1 may also provide `fused_plan(state)` (the CrossMamba block's), which lets the streamer run whole chunks in
    one kernel call (`_ChunkPlan`).
    Internally frames are (batch, frames, channels).
    """

    # the model protocol (tse_cli.models.protocol): a causal class-query model without inference options
    sample_rate = 44100
    clue_kind = "class"
    clue_rate = None
    max_classes = None  # any union of the 41 classes
    inference_options = ()
    takes_progress = False

    def __init__(
        self,
        label_len: int,
        L: int,
        enc_dim: int,
        num_enc_layers: int,
        dec_dim: int,
        out_buf_len: int,
        decoder: nn.Module,
    ):
        super().__init__()
        if enc_dim % dec_dim:
            raise ValueError(f"enc_dim ({enc_dim}) must be a multiple of dec_dim ({dec_dim})")
        self.label_len, self.L, self.out_buf_len = label_len, L, out_buf_len
        self.enc_dim, self.dec_dim = enc_dim, dec_dim
        self.in_conv = nn.Sequential(nn.Conv1d(1, enc_dim, kernel_size=3 * L, stride=L, bias=False), nn.ReLU())
        self.label_embedding = nn.Sequential(
            nn.Linear(label_len, 512),
            nn.LayerNorm(512),
            nn.ReLU(),
            nn.Linear(512, enc_dim),
            nn.LayerNorm(enc_dim),
            nn.ReLU(),
        )
        self.mask_gen = MaskGenerator(enc_dim, num_enc_layers, dec_dim, decoder)
        self.out_conv = nn.Sequential(
            nn.ConvTranspose1d(enc_dim, 1, (out_buf_len + 1) * L, stride=L, padding=out_buf_len * L, bias=False),
            nn.Tanh(),
        )

    @property
    def latency_samples(self) -> int:
        """Algorithmic latency in samples: one decoder group of frames plus L samples of lookahead.

        When fed sample by sample, the output for input sample s is returned at the latest by the `feed` that
        delivers input sample s + latency_samples - 1 (Waveformer: 13*32 + 32 = 448, WaveMamba: 32 + 32 = 64).
        """
        return (self.mask_gen.decoder.granularity + 1) * self.L

    def _check(self, mixture: Tensor, query: Tensor) -> None:
        if mixture.dim() != 3 or mixture.shape[1] != 1:
            raise ValueError(f"mixture must be (batch, 1, samples), got {tuple(mixture.shape)}")
        if query.dim() != 2 or query.shape != (mixture.shape[0], self.label_len):
            raise ValueError(f"query must be (batch, {self.label_len}) for the mixture batch, got {tuple(query.shape)}")

    def fused_front(self, samples: Tensor, label: Tensor, state: list[ContextBuffer]) -> tuple[Tensor, ...] | None:
        """`analyze` and `mask_gen.encode` of a streamed chunk in one call of `kernels.dcc_front`: samples (batch,
        L*(n+2)) -> (in_conv output, l, decoder query, decoder memory), or None where it cannot run (the kernels
        off, more than `kernels.LINEAR_ROWS` frames, no fused encoder plan)."""
        batch, n = samples.shape[0], samples.shape[1] // self.L - 2
        if not (0 < batch * n <= kernels.LINEAR_ROWS and kernels.usable(samples, label)):
            return None
        model, enc, dec = _model_plan(self), self.enc_dim, self.dec_dim
        with self.mask_gen.encoder.fused_layers(state) as layers:
            if layers is None or model is None:
                return None
            outputs = tuple(working(samples, (batch, n, size)) for size in (enc, enc, dec, dec))
            work = working(samples, (3 * batch * n * enc,))
            kernels.dcc_front(model, samples, layers, contiguous(label), outputs, work)
        return outputs

    def fused_project(self, e: Tensor, label: Tensor) -> tuple[Tensor, ...] | None:
        """`mask_gen.project(e, label)` of a block of any length in one pass of `kernels.dcc_label`, or None where
        it cannot run (the kernels off, inference-tensor parameters)."""
        model = _model_plan(self) if e.shape[1] and kernels.usable(e, label) else None
        if model is None:
            return None
        batch, n = e.shape[:2]
        outputs = tuple(working(e, (batch, n, size)) for size in (self.enc_dim, self.dec_dim, self.dec_dim))
        kernels.dcc_label(model, contiguous(e), contiguous(label), outputs)
        return outputs

    def fused_back(self, x: Tensor, l: Tensor, decoded: Tensor, state: list[ContextBuffer]) -> Tensor | None:  # noqa: E741
        """`synthesize(x * mask_gen.mask(l, decoded), state)` -> (batch, 1, n*L) samples, or None where the
        kernels cannot run (as `fused_front`): a streamed chunk in one call of `kernels.dcc_back`, a longer block
        as the mask (`kernels.dcc_mask`), out_conv's product (`_responses`, as `synthesize`) and its overlap-add
        (`kernels.dcc_overlap`)."""
        batch, n = x.shape[:2]
        model = _model_plan(self) if batch * n and kernels.usable(x, l, decoded) else None
        if model is None:
            return None
        out = x.new_empty(batch, 1, n * self.L)  # returned to the caller: never scratch memory
        x, l, decoded = contiguous(x), contiguous(l), contiguous(decoded)  # noqa: E741
        if batch * n <= kernels.LINEAR_ROWS:
            kernels.dcc_back(model, x, l, decoded, state[0], out)
            return out
        b, buffer = self.out_buf_len, state[0]
        frames = working(x, (batch, b + n, self.enc_dim))  # the last b masked frames, then the block's
        frames[:, :b] = buffer.current()
        kernels.dcc_mask(model, x, l, decoded, frames[:, b:])
        buffer.advance(frames[:, b:])
        kernels.dcc_overlap(model, self._responses(frames), out.view(batch, -1))
        return out

    def _responses(self, frames: Tensor) -> Tensor:
        """out_conv's kernel response to each of `frames` (batch, m, enc_dim), one matmul -> (batch, m, (b+1)L),
        b = out_buf_len; `synthesize` overlaps and adds them."""
        rows, parameter = frames.reshape(-1, frames.shape[-1]), self.out_conv[0].weight
        weight = parameter[:, 0]  # (enc_dim, (b+1)L)
        wins = rows.shape[0] > kernels.LINEAR_ROWS and kernels.matmul_wins(*weight.shape)
        if wins and kernels.usable(rows, parameter):
            wide = derived(parameter, "transposed wide panels", lambda w: kernels.pack_panels(w[:, 0].t(), 2))
            segments = kernels.matmul(rows, wide, weight.shape[1])
        else:
            segments = torch.mm(rows, weight, out=scratch(rows, (rows.shape[0], weight.shape[1])))
        return segments.view(frames.shape[0], frames.shape[1], -1)

    def analyze(self, samples: Tensor) -> Tensor:
        """in_conv: samples (batch, L*(n+2)) -> frames (batch, n, enc_dim), window 3L, hop L."""
        windows = contiguous(samples.unfold(1, 3 * self.L, self.L))  # (dim 1: ONNX export mishandles -1)
        return linear(windows, self.in_conv[0].weight).relu_()

    def synthesize(self, masked: Tensor, state: list[ContextBuffer] | None = None) -> Tensor:
        """out_conv: masked frames (batch, n, enc_dim) -> (batch, 1, n*L) samples.

        The transposed conv (kernel (b+1)L, stride L, b = out_buf_len) as one matmul and an overlap-add: output
        frame f sums segment b-k of the kernel response of frame f+k-b, k = 0..b, the first b from the past.
        """
        b, L = self.out_buf_len, self.L
        frames = extend(state, 0, masked, b)
        segments = self._responses(frames).view(frames.shape[0], -1, b + 1, L)  # (batch, n + b, b+1, L)
        n = masked.shape[1]
        out = segments[:, :n, b]
        if b:
            out = torch.add(out, segments[:, 1 : n + 1, b - 1], out=scratch(out))
        for k in range(2, b + 1):
            out.add_(segments[:, k : k + n, b - k])
        return torch.tanh(out.reshape(out.shape[0], 1, n * L))

    def forward(self, mixture: Tensor, query: Tensor) -> Tensor:
        """mixture (batch, 1, samples) at 44.1 kHz, query (batch, 41) multi-hot -> estimate (batch, 1, samples)."""
        self._check(mixture, query)
        samples = mixture.shape[-1]
        if samples == 0:
            return mixture
        x = self.analyze(F.pad(mixture[:, 0], (self.L, -samples % self.L + self.L)))
        l, q, memory = self.mask_gen.encode(x, self.label_embedding(query))  # noqa: E741
        decoded, _ = self.mask_gen.decoder.decode(q, memory)
        return self.synthesize(x * self.mask_gen.mask(l, decoded))[..., :samples]

    def streamer(self, query: Tensor) -> CausalStreamer:
        """A `CausalStreamer` for this (batch, label_len) query; see its docstring."""
        return CausalStreamer(self, query)


class _ChunkPlan:
    """A streamer's chunk as one call of `kernels.dcc_chunk` through `stream` (a `kernels.DCCStream` over the
    streamer's state), for a decoder with `fused_plan` (WaveMamba's CrossMamba block), valid while `current()`: no
    parameter of the model replaced or changed, the same decoder state and scan backend. `stream` is None where
    the kernels cannot run the chunk (inference-tensor parameters, the scan not on the `cpu` backend): the
    streamer then drives the stages itself. Keeps the plans whose memory `stream` points to, and its own working
    memory for chunks of up to `max_samples` samples."""

    def __init__(self, streamer: CausalStreamer):
        model, decoder = streamer.model, streamer.model.mask_gen.decoder
        self.watched = Watched(model)
        self.decoder_state, self.mixer = streamer.decoder_state, decoder.mixer
        self.backend = self.mixer.scan_backend
        self.stream: kernels.DCCStream | None = None
        model_plan = current_plan(_MODEL_PLANS, model, _ModelPlan)
        layers = model.mask_gen.encoder.fused_plan(streamer.encoder_state)
        step = decoder.fused_plan(streamer.decoder_state)
        self.kept = (model_plan, streamer.encoder_state.plan, step)  # what the stream's addresses point into
        if layers is None or model_plan.model is None or step is None or step.block is None:
            return
        batch, samples, frames = streamer.batch, streamer.samples, streamer.out_state[0]
        max_frames = kernels.LINEAR_ROWS // batch
        self.max_samples = min(max_frames * model.L, samples.buffer.shape[1] - samples.context)
        self.work = samples.buffer.new_empty(kernels.dcc_chunk_work(model_plan.model, step.block, batch, max_frames))
        self.layers = list(zip(layers, streamer.encoder_state, strict=True))  # (kernel's layer, its ContextBuffer)
        state = self.decoder_state
        pointers = (model_plan.model, layers, step.block)
        tensors = (streamer.label, samples.buffer, frames.buffer, state.conv, state.ssm, self.work)
        self.stream = kernels.DCCStream(
            *map(ctypes.addressof, pointers), *(t.data_ptr() for t in tensors),
            len(layers), batch, max_frames, samples.buffer.shape[1], 0, frames.buffer.shape[1], 0,
        )  # fmt: skip

    def current(self, streamer: CausalStreamer) -> bool:
        """Still valid for `streamer`'s next chunk (checked on every chunk)."""
        fresh = streamer.decoder_state is self.decoder_state and self.mixer.scan_backend == self.backend
        return fresh and self.watched.fresh()

    def run(self, streamer: CausalStreamer, chunk: Tensor) -> Tensor:
        """chunk (batch, n L) samples, whole frames, unit stride along time -> (batch, 1, n L) output samples; the
        buffers' ends go into the kernel's stream and come back."""
        stream, samples, frames = self.stream, streamer.samples, streamer.out_state[0]
        stream.samples_end, stream.frames_end = samples.end, frames.end
        for layer, buffer in self.layers:
            layer.end = buffer.end
        out = chunk.new_empty(chunk.shape[0], 1, chunk.shape[1])
        kernels.dcc_chunk(stream, chunk, out)
        samples.end, frames.end = stream.samples_end, stream.frames_end
        for layer, buffer in self.layers:
            buffer.end = layer.end
        return out


class CausalStreamer:
    """Chunk-by-chunk inference equal to `forward` on the concatenated input, in bounded memory.

    `feed(chunk (batch, 1, n))` returns the next finished output samples (batch, 1, m) for any n >= 0; `flush()`
    returns the rest, so that cat(all feeds, flush) == forward(cat(all chunks)). State: the last 2L input samples
    of whole frames and fewer than L of the next one, the encoder's dilated-conv context (2*(2^layers - 1)
    frames), the decoder state, fewer than `granularity` frames awaiting the decoder, and `out_buf_len` frames
    for the transposed conv. Runs without autograd (`torch.inference_mode`). Chunks longer than `BLOCK` samples
    are processed in blocks of that size, so working memory does not grow with the chunk either.

    Chunks of up to `SCRATCH` samples (all batch rows together) keep their intermediates in a `Scratch` reused
    from chunk to chunk, and the state is updated in place: a stream of equal chunks then allocates only the
    output it returns and what some kernels allocate inside (LayerNorm; Waveformer's attention), see
    docs/performance.md. `SCRATCH = 0` (set before creating the streamer) allocates as usual instead, 1-2% faster.
    With a decoder that has `fused_plan` (WaveMamba), a chunk of whole frames after whole frames, of up to
    `kernels.LINEAR_ROWS` frames of all rows, goes through the model in one kernel call instead (`_ChunkPlan`).
    """

    BLOCK = 1 << 16  # samples (1.5 s at 44.1 kHz)
    SCRATCH = 1 << 11  # samples per chunk, batch rows together (46 ms at batch 1: 64 frames, the scan's STREAM_LENGTH)

    @torch.inference_mode()
    def __init__(self, model: DCCExtractor, query: Tensor):
        self.model = model
        weight = model.in_conv[0].weight
        self.device, self.dtype = weight.device, weight.dtype
        if query.dim() != 2 or query.shape[1] != model.label_len:
            raise ValueError(f"query must be (batch, {model.label_len}), got {tuple(query.shape)}")
        batch = self.batch = query.shape[0]
        factory = {"device": self.device, "dtype": self.dtype}
        self.label = model.label_embedding(query.to(self.device, self.dtype))
        # in_conv windows are 3L samples, hop L: each new frame of L samples comes with the 2L before it
        self.samples = ContextBuffer(batch, 1, 2 * model.L, **factory, spare=self.SCRATCH)
        self.partial = torch.zeros(batch, model.L, **factory)  # the first `partial_len` samples of the next frame
        self.partial_len = 0
        self.skip = 1  # the stream starts L samples before the input (left padding): the first window is unused
        self.encoder_state = model.mask_gen.encoder.init_state(batch, self.device, self.dtype)
        self.decoder_state = model.mask_gen.decoder.init_state(batch, self.device, self.dtype)
        self.out_state = context_buffers([model.out_buf_len], batch, model.enc_dim, self.device, self.dtype)
        # frames awaiting the decoder, (batch, frames, 2*enc_dim + 2*dec_dim): `waiting` of them from `waiting_start`
        self.pending = torch.zeros(batch, 0, 2 * (model.enc_dim + model.dec_dim), **factory)
        self.waiting = self.waiting_start = 0
        self.scratch = Scratch()
        decoder = model.mask_gen.decoder
        fusable = hasattr(decoder, "fused_plan") and decoder.granularity == 1 and kernels.usable(self.label)
        self.chunk_plan: _ChunkPlan | None | bool = None if fusable else False  # False: never (see `_fused`)
        self.received = self.emitted = 0
        self.finished = False

    @torch.inference_mode()
    def feed(self, chunk: Tensor) -> Tensor:
        """Append input samples (batch, 1, n); return the output samples (batch, 1, m) that are now final."""
        if self.finished:
            raise RuntimeError("this streamer was flushed; start a new one with model.streamer(query)")
        if chunk.dim() != 3 or chunk.shape[:2] != (self.batch, 1):
            raise ValueError(f"chunk must be ({self.batch}, 1, samples), got {tuple(chunk.shape)}")
        self.received += chunk.shape[-1]
        chunk = chunk[:, 0].to(self.device, self.dtype)
        if chunk.shape[-1] <= self.BLOCK:
            return self._process(chunk, final=False)
        # long chunks go through in blocks: peak memory stays bounded, the result is the same
        return torch.cat([self._process(block, final=False) for block in chunk.split(self.BLOCK, dim=-1)], dim=-1)

    @torch.inference_mode()
    def flush(self) -> Tensor:
        """End the stream: return the remaining output samples (batch, 1, rest)."""
        if self.finished:
            raise RuntimeError("this streamer was already flushed")
        self.finished = True
        L = self.model.L
        padding = torch.zeros(self.batch, -self.received % L + L, device=self.device, dtype=self.dtype)
        remaining = self.received - self.emitted
        return self._process(padding, final=True)[..., :remaining]

    def _process(self, chunk: Tensor, final: bool) -> Tensor:
        """chunk (batch, n) samples -> (batch, 1, m) finished output samples."""
        out = None if final else self._fused(chunk)
        if out is None:
            out = self._staged(chunk, final)
        self.emitted += out.shape[-1]
        return out

    def _fused(self, chunk: Tensor) -> Tensor | None:
        """The chunk through the whole model in one kernel call (`_ChunkPlan`), or None where that cannot run: a
        decoder without `fused_plan`, a chunk that is not whole frames after whole frames (or the stream's first
        frame, whose window starts before the input), too long a chunk, a plan without a kernel stream."""
        plan = self.chunk_plan
        if plan is False or self.partial_len or self.skip or chunk.shape[-1] % self.model.L:
            return None
        if plan is None or not plan.current(self):
            plan = self.chunk_plan = _ChunkPlan(self)
        if plan.stream is None or not 0 < chunk.shape[-1] <= plan.max_samples:
            return None
        return plan.run(self, chunk if chunk.stride(-1) == 1 else chunk.contiguous())

    def _staged(self, chunk: Tensor, final: bool) -> Tensor:
        """`_process` stage by stage: the encoder's front, frames held back for the decoder's groups, the decoder,
        the back (fused kernels per stage where they can run)."""
        small = chunk.numel() <= self.SCRATCH
        with self.scratch.active() if small else contextlib.nullcontext():
            stages = self._group(self._encode(chunk), final)
            if stages is None:
                return chunk.new_zeros(self.batch, 1, 0)
            model = self.model
            x, l, q, memory = stages  # noqa: E741
            decoded, self.decoder_state = model.mask_gen.decoder.decode(q, memory, self.decoder_state)
            out = model.fused_back(x, l, decoded, self.out_state)
            if out is None:
                masked = torch.mul(x, model.mask_gen.mask(l, decoded), out=scratch(x))
                out = model.synthesize(masked, self.out_state)
        return out

    def _encode(self, chunk: Tensor) -> tuple[Tensor, ...] | None:
        """chunk (batch, n) samples -> (in_conv output, l, decoder query, decoder memory) for the frames it
        completes, or None if it completes none."""
        L, have, n = self.model.L, self.partial_len, chunk.shape[-1]
        if have + n < L:  # no frame completed
            self.partial[:, have : have + n] = chunk
            self.partial_len += n
            return None
        whole = (have + n) // L * L - have  # samples of the chunk that complete frames
        stream = self.samples.extend(self.partial[:, :have, None], chunk[:, :whole, None])[..., 0]
        self.partial_len = n - whole
        self.partial[:, : self.partial_len] = chunk[:, whole:]
        skip, self.skip = self.skip, 0
        if stream.shape[-1] - skip * L < 3 * L:
            return None
        fused = self.model.fused_front(stream[:, skip * L :], self.label, self.encoder_state)
        if fused is not None:
            return fused
        x = self.model.analyze(stream[:, skip * L :])
        e = self.model.mask_gen.encoder(x, self.encoder_state)
        return (x, *(self.model.fused_project(e, self.label) or self.model.mask_gen.project(e, self.label)))

    def _group(self, stages: tuple[Tensor, ...] | None, final: bool) -> tuple[Tensor, ...] | None:
        """Hold frames back until the decoder has a whole group of them (all that are left when `final`).

        `stages` (in_conv output, l, decoder query, decoder memory) for the new frames, or None if there are none.
        """
        granularity = self.model.mask_gen.decoder.granularity
        new = 0 if stages is None else stages[0].shape[1]
        if self.waiting == 0 and (final or new % granularity == 0):
            return stages  # whole groups (or the end of the stream): nothing to hold back
        # the frames left waiting after the last group handed out (consumed by now) move to the front
        waiting, start, total = self.waiting, self.waiting_start, self.waiting + new
        if self.pending.shape[1] < total:
            grown = self.pending.new_empty(self.batch, total, self.pending.shape[2])
            grown[:, :waiting] = self.pending[:, start : start + waiting]
            self.pending = grown
        elif start:  # no overlap: start is a whole number of groups, more than the frames waiting
            self.pending[:, :waiting] = self.pending[:, start : start + waiting]
        column = 0
        for stage in stages or ():
            self.pending[:, waiting:total, column : column + stage.shape[-1]] = stage
            column += stage.shape[-1]
        ready = total if final else total - total % granularity
        self.waiting, self.waiting_start = total - ready, ready
        if ready == 0:
            return None
        enc, dec = self.model.enc_dim, self.model.dec_dim
        return self.pending[:, :ready].split([enc, enc, dec, dec], dim=-1)
