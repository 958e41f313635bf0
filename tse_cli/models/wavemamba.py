"""WaveMamba: Waveformer with its transformer decoder replaced by one causal CrossMamba block.

Everything but the decoder is `tse_cli.models.dcc.DCCExtractor` (same names, same streaming). The block
takes its query (C) from the label-weighted encoding, proj_e2d_l(l), and its key/value (B, delta, u) from the
encoding, proj_e2d_e(e), with d_model = dec_dim. Being a recurrence, it emits every frame as soon as it arrives:
latency 2L = 64 samples (1.45 ms), against Waveformer's 13-frame chunks.
Parameters: 3,656,704 (large, dec_dim 256) and 3,236,608 (small, dec_dim 128).
"""

from __future__ import annotations

from torch import Tensor

from tse_cli.classes import NUM_CLASSES
from tse_cli.models.crossmamba import CrossMambaBlock, MambaState
from tse_cli.models.dcc import DCCExtractor


class CrossMambaDecoder(CrossMambaBlock):
    """The causal CrossMamba block behind the decoder interface of `DCCExtractor`: it emits every frame."""

    granularity = 1

    def decode(
        self, query: Tensor, memory: Tensor, state: MambaState | None = None
    ) -> tuple[Tensor, MambaState | None]:
        """query (CrossMamba's query: C), memory (its value: B, delta, u), both (batch, frames, dim) -> same shape.

        `state` (from `init_state`) carries the recurrence between streamed chunks; None is the offline forward.
        """
        if state is None:
            return self(query, memory), None
        return self.step(query, memory, state)


class WaveMamba(DCCExtractor):
    """WaveMamba; defaults are WaveMamba-large (E512/D256), small is dec_dim=128. Call as `Waveformer`."""

    def __init__(
        self,
        label_len: int = NUM_CLASSES,
        L: int = 32,
        enc_dim: int = 512,
        num_enc_layers: int = 10,
        dec_dim: int = 256,
        out_buf_len: int = 4,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
    ):
        decoder = CrossMambaDecoder(dec_dim, d_state=d_state, d_conv=d_conv, expand=expand)
        super().__init__(label_len, L, enc_dim, num_enc_layers, dec_dim, out_buf_len, decoder)
