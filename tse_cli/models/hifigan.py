"""HiFi-GAN generator (Kong et al. 2020), the 16 kHz / 64-mel version AudioLDM trained and DPM-TSE ships.

Natural-log mel (batch, 64, frames) -> waveform (batch, 1, 160 * frames + 32) in [-1, 1]. Resblock type 1,
weight norm already folded into plain weights (as in DPM-TSE's first_stage.pt). Parameter names follow the
published generator (`conv_pre`, `ups.i`, `resblocks.j.convs1.k`, `resblocks.j.convs2.k`, `conv_post`) so its
state dict loads key for key.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

LRELU_SLOPE = 0.1


def _same_padding(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


# residual block (type 1): three dilated conv pairs, each with a skip


class ResBlock(nn.Module):
    """x + conv(lrelu(conv_dilated(lrelu(x)))) for each dilation, channels and length kept."""

    def __init__(self, channels: int, kernel: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, dilation=d, padding=_same_padding(kernel, d)) for d in dilations
        )
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, padding=_same_padding(kernel)) for _ in dilations
        )

    def forward(self, x: Tensor) -> Tensor:
        for dilated, plain in zip(self.convs1, self.convs2, strict=True):
            x = x + plain(F.leaky_relu(dilated(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
        return x


# generator: conv_pre, then per stage (transposed-conv upsample, mean of resblocks), conv_post, tanh


class HiFiGAN(nn.Module):
    """Mel (batch, num_mels, frames) -> waveform (batch, 1, frames * prod(upsample_rates) + extra).

    With the published settings (hop 160): `160 * frames + 32` samples at 16 kHz.
    """

    def __init__(
        self,
        num_mels: int = 64,
        upsample_rates: Sequence[int] = (5, 4, 2, 2, 2),
        upsample_kernel_sizes: Sequence[int] = (16, 16, 8, 4, 4),
        upsample_initial_channel: int = 1024,
        resblock_kernel_sizes: Sequence[int] = (3, 7, 11),
        resblock_dilation_sizes: Sequence[Sequence[int]] = ((1, 3, 5), (1, 3, 5), (1, 3, 5)),
    ) -> None:
        super().__init__()
        if upsample_initial_channel % 2 ** len(upsample_rates):
            raise ValueError(
                f"upsample_initial_channel {upsample_initial_channel} must be a multiple of "
                f"{2 ** len(upsample_rates)} (it is halved at each of the {len(upsample_rates)} upsampling stages)"
            )
        self.num_kernels = len(resblock_kernel_sizes)
        self.conv_pre = nn.Conv1d(num_mels, upsample_initial_channel, 7, padding=3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        channels = upsample_initial_channel
        for rate, kernel in zip(upsample_rates, upsample_kernel_sizes, strict=True):
            self.ups.append(nn.ConvTranspose1d(channels, channels // 2, kernel, rate, padding=(kernel - rate) // 2))
            channels //= 2
            self.resblocks.extend(
                ResBlock(channels, k, d) for k, d in zip(resblock_kernel_sizes, resblock_dilation_sizes, strict=True)
            )
        self.conv_post = nn.Conv1d(channels, 1, 7, padding=3)

    def forward(self, mel: Tensor) -> Tensor:
        x = self.conv_pre(mel)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            x = sum(block(x) for block in blocks) / self.num_kernels
        # the published generator uses leaky_relu's default slope (0.01) here, not LRELU_SLOPE
        return torch.tanh(self.conv_post(F.leaky_relu(x)))
