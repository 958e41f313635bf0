"""The audio-visual dual-path chassis of AV-SepFormer and AV-SepMamba, at 16 kHz with lip embeddings at 25 fps.

The mixture is encoded (Conv1d 16/8, 2000 frames per second), cut into chunks of 160 frames with hop 80 so that
one chunk hop is exactly one 40 ms video frame, and processed by dual blocks: an intra-chunk sequence model, then
an inter-chunk one that also takes the visual stream (one frame per chunk); a gated mask head and a transposed
conv decode the masked encoding. `AVDualPath` is that pipeline with both sequence models left open:
`tse_cli.models.avsepformer` plugs in transformers (with a cross-modal attention layer), `tse_cli.models.avsepmamba`
bidirectional Mamba and CrossMamba blocks. Module and parameter names follow the published code
(lin9x/AV-Sepformer, `Cross_Sepformer`), so its state_dicts load with `strict=True`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tse_cli.models.budget import placed
from tse_cli.models.positions import sinusoids
from tse_cli.visual import CLUE_RATE
from tse_cli.visual import EMBED_DIM as VISUAL_DIM

SAMPLE_RATE = 16000
WINDOW_SECONDS = 4.0  # training crop length; the engine overlap-adds windows of this size
GROUP_NORM_EPS = 1e-8

# (batch', length, d_model) -> same
IntraFactory = Callable[[], nn.Module]
# (batch', length, d_model) audio, (batch', length, d_model) visual -> audio-shaped
InterFactory = Callable[[], nn.Module]


# positional encodings


class _Frequencies(nn.Module):
    """Holds `inv_freq` (a frozen parameter in the published code) under the published name `penc`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = int(math.ceil(channels / 4) * 2)
        steps = torch.arange(0, half, 2, device="cpu").float()  # (see `budget.placed`)
        self.inv_freq = nn.Parameter(placed(1.0 / (10000 ** (steps / half))), requires_grad=False)


class PositionalEncoding2D(nn.Module):
    """2-D sinusoidal table over (chunk position k, chunk index s): first half of the channels encodes k, second s."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.penc = _Frequencies(channels)

    def forward(self, chunks: int, count: int) -> Tensor:
        """The table for `chunks` x `count` positions, (channels, chunks, count), float32."""
        inv_freq = self.penc.inv_freq
        along_k = sinusoids(torch.arange(chunks, device=inv_freq.device).float(), inv_freq)  # (K, half)
        along_s = sinusoids(torch.arange(count, device=inv_freq.device).float(), inv_freq)  # (S, half)
        table = torch.cat(
            (along_k[:, None, :].expand(-1, count, -1), along_s[None, :, :].expand(chunks, -1, -1)), dim=-1
        )
        return table[..., : self.channels].permute(2, 0, 1)


# sequence models


class TransformerStack(nn.Module):
    """`layers` applied in turn (published: `nn.TransformerEncoder`; AV-SepMamba stacks its BiMamba blocks with it)."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


# visual front end


class VisualConv1D(nn.Module):
    """Residual depthwise-separable block over lip embeddings: (batch, 512, frames) -> same."""

    def __init__(self, channels: int = VISUAL_DIM) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.ReLU(),
            nn.BatchNorm1d(channels),
            nn.Conv1d(channels, channels, 3, padding=1, groups=channels, bias=False),
            nn.PReLU(),
            nn.BatchNorm1d(channels),
            nn.Conv1d(channels, channels, 1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


# dual path


def segment(x: Tensor, chunk: int) -> tuple[Tensor, int]:
    """(batch, N, L) -> chunks (batch, N, chunk, S) with hop chunk/2, and the right padding `gap`.

    Zero-pads `gap` frames at the end so that L + gap + hop is a multiple of `chunk`, then `hop` on both sides.
    """
    hop = chunk // 2
    gap = chunk - (hop + x.shape[-1] % chunk) % chunk
    x = F.pad(x, (hop, gap + hop))
    return x.unfold(-1, chunk, hop).transpose(-1, -2), gap


def overlap_add(chunks: Tensor, gap: int) -> Tensor:
    """Inverse of `segment`: (batch, N, chunk, S) -> (batch, N, L), summing the overlaps."""
    batch, channels, chunk, count = chunks.shape
    hop = chunk // 2
    padded = (count + 1) * hop
    out = F.fold(chunks.reshape(batch, channels * chunk, count), (1, padded), (1, chunk), stride=(1, hop))
    return out[:, :, 0, hop : padded - hop - gap]


def align_visual(visual: Tensor, count: int) -> Tensor:
    """(batch, N, frames) -> (batch, N, count): one frame per chunk, cut or padded by repeating the last frame."""
    visual = visual[..., :count]
    return F.pad(visual, (0, count - visual.shape[-1]), mode="replicate") if visual.shape[-1] < count else visual


class DualBlock(nn.Module):
    """2-D positional encoding, intra-chunk model (+ skip), inter-chunk model with the visual stream (+ skip)."""

    def __init__(self, intra: nn.Module, inter: nn.Module, d_model: int) -> None:
        super().__init__()
        self.intra_mdl = intra
        self.inter_mdl = inter
        self.pos2d = PositionalEncoding2D(d_model)
        self.intra_norm = nn.GroupNorm(1, d_model, eps=GROUP_NORM_EPS)
        self.inter_norm = nn.GroupNorm(1, d_model, eps=GROUP_NORM_EPS)

    def forward(self, x: Tensor, visual: Tensor) -> Tensor:
        """x (batch, N, K, S) audio chunks, visual (batch, N, S) one frame per chunk -> (batch, N, K, S)."""
        batch, channels, chunk, count = x.shape
        pe = self.pos2d(chunk, count).to(x.dtype)
        x = x + pe
        intra = self.intra_mdl(x.permute(0, 3, 2, 1).reshape(batch * count, chunk, channels))
        intra = self.intra_norm(intra.reshape(batch, count, chunk, channels).permute(0, 3, 2, 1)) + x
        # the visual frame of chunk s sits at the chunk's centre position
        visual = (visual + pe[:, chunk // 2, :]).permute(0, 2, 1)  # (batch, S, N)
        visual = visual[:, None].expand(-1, chunk, -1, -1).reshape(batch * chunk, count, channels)
        inter = self.inter_mdl(intra.permute(0, 2, 3, 1).reshape(batch * chunk, count, channels), visual)
        inter = self.inter_norm(inter.reshape(batch, chunk, count, channels).permute(0, 3, 1, 2))
        return inter + intra


class Separator(nn.Module):
    """Mask estimator: encoded mixture (batch, N, L) and lip embeddings (batch, frames, 512) -> mask (batch, N, L)."""

    def __init__(self, d_model: int, intra: IntraFactory, inter: InterFactory, blocks: int, chunk: int) -> None:
        super().__init__()
        self.chunk = chunk
        self.norm = nn.GroupNorm(1, d_model, eps=GROUP_NORM_EPS)
        self.conv1d = nn.Conv1d(d_model, d_model, 1, bias=False)
        self.visual_conv = nn.Sequential(*(VisualConv1D() for _ in range(5)), nn.Conv1d(VISUAL_DIM, d_model, 1))
        self.dual_mdl = nn.ModuleList(DualBlock(intra(), inter(), d_model) for _ in range(blocks))
        self.prelu = nn.PReLU()
        self.conv2d = nn.Conv2d(d_model, d_model, 1)
        self.output = nn.Sequential(nn.Conv1d(d_model, d_model, 1), nn.Tanh())
        self.output_gate = nn.Sequential(nn.Conv1d(d_model, d_model, 1), nn.Sigmoid())
        self.end_conv1x1 = nn.Conv1d(d_model, d_model, 1, bias=False)

    def forward(self, w: Tensor, visual: Tensor) -> Tensor:
        x, gap = segment(self.conv1d(self.norm(w)), self.chunk)
        v = align_visual(self.visual_conv(visual.transpose(1, 2)), x.shape[-1])
        for block in self.dual_mdl:
            x = block(x, v)
        x = overlap_add(self.conv2d(self.prelu(x)), gap)
        return F.relu(self.end_conv1x1(self.output(x) * self.output_gate(x)))


class Encoder(nn.Module):
    """Conv1d(1, N, kernel, stride kernel/2, no bias) + ReLU: (batch, 1, samples) -> (batch, N, frames)."""

    def __init__(self, d_model: int, kernel: int) -> None:
        super().__init__()
        self.conv1d = nn.Conv1d(1, d_model, kernel, stride=kernel // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv1d(x))


class AVDualPath(nn.Module):
    """Encoder -> dual-path separator (with the visual stream) -> mask -> decoder, at 16 kHz.

    forward(mixture (batch, 1, samples), visual (batch, frames, 512) lip embeddings at 25 fps) -> (batch, 1, samples).
    Any number of frames is accepted: the visual stream is cut or padded (repeating its last frame) to one frame
    per 40 ms chunk hop, as published.
    """

    # the model protocol (tse_cli.models.protocol): a window model with a visual clue, no inference options
    sample_rate = SAMPLE_RATE
    clue_kind = "visual"
    clue_rate = CLUE_RATE
    max_classes = None
    inference_options = ()
    takes_progress = False
    window_samples = int(WINDOW_SECONDS * SAMPLE_RATE)

    def __init__(
        self,
        d_model: int,
        intra: IntraFactory,
        inter: InterFactory,
        blocks: int = 2,
        chunk: int = 160,
        kernel: int = 16,
    ) -> None:
        super().__init__()
        self.kernel = kernel
        self.AudioEncoder = Encoder(d_model, kernel)
        self.Separator = Separator(d_model, intra, inter, blocks, chunk)
        self.AudioDecoder = nn.ConvTranspose1d(d_model, 1, kernel, stride=kernel // 2, bias=False)

    def forward(self, mixture: Tensor, visual: Tensor) -> Tensor:
        if mixture.dim() != 3 or mixture.shape[1] != 1:
            raise ValueError(f"mixture must be (batch, 1, samples), got {tuple(mixture.shape)}")
        if visual.dim() != 3 or visual.shape[0] != mixture.shape[0] or visual.shape[-1] != VISUAL_DIM:
            raise ValueError(f"visual must be (batch, frames, {VISUAL_DIM}), got {tuple(visual.shape)}")
        samples = mixture.shape[-1]
        w = self.AudioEncoder(F.pad(mixture, (0, max(0, self.kernel - samples))))
        out = self.AudioDecoder(w * self.Separator(w, visual.to(w.dtype)))
        return F.pad(out, (0, max(0, samples - out.shape[-1])))[..., :samples]
