"""AV-SepFormer (Lin et al. 2023): audio-visual target speaker extraction with a dual-path transformer.

16 kHz speech in, the target speaker's speech out, steered by the speaker's 512-d lip embeddings at 25 fps.
The mixture is encoded (Conv1d 16/8, 2000 frames per second), cut into chunks of 160 frames with hop 80 so that
one chunk hop is exactly one 40 ms video frame, and processed by dual blocks: an intra-chunk transformer, then an
inter-chunk stack whose first layer is a cross-modal attention (query = visual, key/value = audio).

Module and parameter names follow the published code (lin9x/AV-Sepformer, `Cross_Sepformer`) so its
state_dicts load with `strict=True`; the 1-D and 2-D positional tables are parameters there (not buffers) and
are kept so, which is why the published count 29,631,622 includes them.

The chassis (encoder, chunking, dual blocks, mask head, decoder) is `tse_cli.models.dualpath.AVDualPath`;
AV-SepFormer and AV-SepMamba (`tse_cli.models.avsepmamba`) differ only in the intra/inter sequence models they
plug into it.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tse_cli.models.dualpath import AVDualPath, TransformerStack
from tse_cli.models.positions import sinusoid_table
from tse_cli.models.published import PublishedFormatError, load_strict, read_torch_file, tensor_dict

# positional encoding


class SinusoidalEncoding(nn.Module):
    """Adds the Transformer's 1-D sinusoidal table, then dropout (0.1 as published). Input (batch, length, d)."""

    def __init__(self, d_model: int, max_len: int = 5000, dropout: float = 0.1) -> None:
        super().__init__()
        # stored (max_len, 1, d) as a frozen parameter, as in the published state_dict
        self.pe = nn.Parameter(sinusoid_table(max_len, d_model)[:, None, :], requires_grad=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(x + self.pe[: x.shape[1], 0].to(x.dtype))


# transformer layers


class Attention(nn.Module):
    """Multi-head attention with `nn.MultiheadAttention`'s parameter layout, computed with scaled_dot_product_attention.

    query (batch, Lq, d), key_value (batch, Lk, d) -> (batch, Lq, d).
    """

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d_model))
        self.out_proj = nn.Linear(d_model, d_model)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query: Tensor, key_value: Tensor) -> Tensor:
        w_q, w_kv = self.in_proj_weight.split((query.shape[-1], 2 * query.shape[-1]))
        b_q, b_kv = self.in_proj_bias.split((query.shape[-1], 2 * query.shape[-1]))
        q = F.linear(query, w_q, b_q)
        k, v = F.linear(key_value, w_kv, b_kv).chunk(2, dim=-1)
        q, k, v = (t.unflatten(-1, (self.n_heads, -1)).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).flatten(-2))


class TransformerLayer(nn.Module):
    """Pre-norm transformer layer (ReLU FFN), names as `nn.TransformerEncoderLayer`.

    `forward(x)` is self-attention; `forward(x, clue)` is the published cross-modal layer:
    x + clue + MHA(query=norm1(clue), key/value=norm1(x)), then the FFN. Shapes (batch, length, d_model).
    """

    def __init__(self, d_model: int, n_heads: int, d_ffn: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.self_attn = Attention(d_model, n_heads)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, clue: Tensor | None = None) -> Tensor:
        h = self.norm1(x)
        if clue is None:
            x = x + self.dropout(self.self_attn(h, h))
        else:
            x = x + clue + self.dropout(self.self_attn(self.norm1(clue), h))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(self.norm2(x)))))
        return x + self.dropout(ffn)


class IntraTransformer(nn.Module):
    """Within-chunk model: 1-D positional encoding, then `layers` pre-norm self-attention layers."""

    def __init__(self, d_model: int, n_heads: int, d_ffn: int, layers: int, dropout: float, pe_dropout: float) -> None:
        super().__init__()
        self.pos_enc = SinusoidalEncoding(d_model, dropout=pe_dropout)
        self.mdl = TransformerStack([TransformerLayer(d_model, n_heads, d_ffn, dropout) for _ in range(layers)])

    def forward(self, x: Tensor) -> Tensor:
        return self.mdl(self.pos_enc(x))


class CrossTransformerStack(nn.Module):
    """One cross-modal layer (query = visual) followed by `layers - 1` self-attention layers."""

    def __init__(self, d_model: int, n_heads: int, d_ffn: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.cross_attention_layer = TransformerLayer(d_model, n_heads, d_ffn, dropout)
        self.transformer_layers = nn.ModuleList(
            TransformerLayer(d_model, n_heads, d_ffn, dropout) for _ in range(layers - 1)
        )

    def forward(self, audio: Tensor, visual: Tensor) -> Tensor:
        x = self.cross_attention_layer(audio, visual)
        for layer in self.transformer_layers:
            x = layer(x)
        return x


class InterTransformer(nn.Module):
    """Across-chunk model: (batch', chunks, d) audio and visual -> (batch', chunks, d)."""

    def __init__(self, d_model: int, n_heads: int, d_ffn: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.mdl = CrossTransformerStack(d_model, n_heads, d_ffn, layers, dropout)

    def forward(self, audio: Tensor, visual: Tensor) -> Tensor:
        return self.mdl(audio, visual)


# the model


class AVSepFormer(AVDualPath):
    """AV-SepFormer as published: d_model 256, 2 dual blocks of 8 intra and 1 cross + 7 inter pre-norm layers.

    `d_model=256` gives the published 29,631,622 parameters (Table I, large); `d_model=128` the small variant
    (13,317,446; Table I: 13.32 M). Heads, FFN width and layer counts stay as published in both.
    """

    def __init__(
        self,
        d_model: int = 256,
        n_heads: int = 8,
        d_ffn: int = 1024,
        intra_layers: int = 8,
        inter_layers: int = 8,
        blocks: int = 2,
        chunk: int = 160,
        kernel: int = 16,
        dropout: float = 0.0,
        pe_dropout: float = 0.1,
    ) -> None:
        super().__init__(
            d_model,
            intra=lambda: IntraTransformer(d_model, n_heads, d_ffn, intra_layers, dropout, pe_dropout),
            inter=lambda: InterTransformer(d_model, n_heads, d_ffn, inter_layers, dropout),
            blocks=blocks,
            chunk=chunk,
            kernel=kernel,
        )


# published checkpoints


def _published_config(path: Path, state: dict[str, Tensor]) -> tuple[str, dict[str, int]]:
    """Architecture name and constructor arguments read off a published state_dict's shapes and key names."""

    def count(pattern: str) -> int:
        prefix, suffix = pattern.split("#")
        return len({k[len(prefix) :].split(".")[0] for k in state if k.startswith(prefix) and suffix in k})

    encoder = state.get("AudioEncoder.conv1d.weight")
    linear1 = state.get("Separator.dual_mdl.0.intra_mdl.mdl.layers.0.linear1.weight")
    if encoder is None or linear1 is None:
        what = "no AudioEncoder / intra transformer weights"
        raise PublishedFormatError(f"{path}: not an AV-SepFormer checkpoint ({what})")
    config = {
        "d_model": encoder.shape[0],
        "d_ffn": linear1.shape[0],
        "intra_layers": count("Separator.dual_mdl.0.intra_mdl.mdl.layers.#.linear1.weight"),
        "inter_layers": 1 + count("Separator.dual_mdl.0.inter_mdl.mdl.transformer_layers.#.linear1.weight"),
        "blocks": count("Separator.dual_mdl.#.intra_norm.weight"),
    }
    return ("av-sepformer-small" if config["d_model"] == 128 else "av-sepformer-large"), config


def load_published(checkpoint_path: str | Path) -> AVSepFormer:
    """A published AV-SepFormer checkpoint (lin9x/AV-Sepformer, saved by ignite) as an `AVSepFormer` in eval mode.

    Reads the torch pickle with `torch.load(weights_only=True)` only (`tse_cli.models.published`). Accepts the bare
    state_dict ignite writes for a single model, or one under "model" / "model_state_dict" / "state_dict", with or
    without the "module." prefix of DistributedDataParallel. Width and layer counts are read off the weights
    (published: d_model 256, FFN 1024, 8 + 8 layers, 2 blocks; 8 heads assumed); every key and shape must then
    match (`PublishedFormatError` names what does not).
    """
    from tse_cli.models import create

    path = Path(checkpoint_path)
    state = tensor_dict(read_torch_file(path), path, under=("model", "model_state_dict", "state_dict"))
    state = {k.removeprefix("module."): v for k, v in state.items()}
    arch, config = _published_config(path, state)
    model = create(arch, **config)
    load_strict(model, state, path, arch)
    return model.eval()
