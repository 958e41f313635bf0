"""AV-SepMamba (seed paper 000): AV-SepFormer with its transformer layers replaced by bidirectional Mamba.

Same chassis as AV-SepFormer, `tse_cli.models.dualpath.AVDualPath` (encoder, chunking with one 40 ms chunk hop
per video frame, 2 dual blocks, mask head, decoder). In each dual block:
- intra-chunk: `intra_layers` bidirectional self-Mamba blocks (`BiMamba`, RMSNorm, no MLP);
- inter-chunk: one bidirectional CrossMamba block (`BiCrossMamba`, query = visual, key/value = audio) in place
  of the cross-modal attention layer, then `inter_layers - 1` `BiMamba` blocks.
No 1-D positional table (a recurrence knows the order); the 2-D chunk encoding of the chassis stays.

Layer counts: the published layout (8 intra, 1 cross + 7 inter per dual block) reproduces Table I:
d_model 256 -> 30,357,638 parameters (Table I: 30.36 M), d_model 128 -> 9,076,550 (Table I: 9.08 M),
with d_state 16, d_conv 4, expand 2.
"""

from __future__ import annotations

from torch import Tensor, nn

from tse_cli.models.crossmamba import BiCrossMamba, BiMamba
from tse_cli.models.dualpath import AVDualPath, TransformerStack


class InterMamba(nn.Module):
    """Across-chunk model: BiCrossMamba(query=visual, value=audio), then `layers - 1` BiMamba blocks."""

    def __init__(self, d_model: int, layers: int, **mamba: int) -> None:
        super().__init__()
        self.cross = BiCrossMamba(d_model, **mamba)
        self.layers = nn.ModuleList(BiMamba(d_model, **mamba) for _ in range(layers - 1))

    def forward(self, audio: Tensor, visual: Tensor) -> Tensor:
        """audio, visual (batch', chunks, d_model) -> (batch', chunks, d_model)."""
        x = self.cross(visual, audio)
        for layer in self.layers:
            x = layer(x)
        return x


class AVSepMamba(AVDualPath):
    """AV-SepMamba: large d_model 256 (30,357,638 params), small d_model 128 (9,076,550).

    forward(mixture (batch, 1, samples) at 16 kHz, visual (batch, frames, 512) at 25 fps) -> (batch, 1, samples).
    """

    def __init__(
        self,
        d_model: int = 256,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        intra_layers: int = 8,
        inter_layers: int = 8,
        blocks: int = 2,
        chunk: int = 160,
        kernel: int = 16,
    ) -> None:
        mamba = {"d_state": d_state, "d_conv": d_conv, "expand": expand}
        super().__init__(
            d_model,
            intra=lambda: TransformerStack([BiMamba(d_model, **mamba) for _ in range(intra_layers)]),  # within chunks
            inter=lambda: InterMamba(d_model, inter_layers, **mamba),
            blocks=blocks,
            chunk=chunk,
            kernel=kernel,
        )
