"""AV-SepFormer (Lin et al. 2023): audio-visual target speaker extraction with a dual-path transformer.

16 kHz speech in, the target speaker's speech out, steered by the speaker's 512-d lip embeddings at 25 fps.
The mixture is encoded (Conv1d 16/8, 2000 frames per second), cut into chunks of 160 frames with hop 80 so that
one chunk hop is exactly one 40 ms video frame, and processed by dual blocks: an intra-chunk transformer, then an
inter-chunk stack whose first layer is a cross-modal attention (query = visual, key/value = audio).

Module and parameter names follow the published code (lin9x/AV-Sepformer, `Cross_Sepformer`) so its
state_dicts load with `strict=True`; the 1-D and 2-D positional tables are parameters there (not buffers) and
are kept so, which is why the published count 29,631,622 includes them.

`AVDualPath` is the shared chassis (encoder, separator, mask head, decoder); AV-SepFormer and AV-SepMamba
(`tse_cli.models.avsepmamba`) differ only in the intra/inter sequence models they plug into it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SAMPLE_RATE = 16000
CLUE_RATE = 25.0  # lip-embedding frames per second
VISUAL_DIM = 512  # lip-embedding width
WINDOW_SECONDS = 4.0  # training crop length; the engine overlap-adds windows of this size
GROUP_NORM_EPS = 1e-8

# (batch', length, d_model) -> same
IntraFactory = Callable[[], nn.Module]
# (batch', length, d_model) audio, (batch', length, d_model) visual -> audio-shaped
InterFactory = Callable[[], nn.Module]

# positional encodings


def sinusoids(positions: Tensor, inv_freq: Tensor) -> Tensor:
    """Interleaved sin/cos table: (P,) positions x (F,) frequencies -> (P, 2F), [sin f0, cos f0, sin f1, ...]."""
    angles = positions[:, None] * inv_freq[None, :]
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)


class SinusoidalEncoding(nn.Module):
    """Adds the Transformer's 1-D sinusoidal table, then dropout (0.1 as published). Input (batch, length, d)."""

    def __init__(self, d_model: int, max_len: int = 5000, dropout: float = 0.1) -> None:
        super().__init__()
        inv_freq = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
        table = sinusoids(torch.arange(max_len).float(), inv_freq)[:, :d_model]
        # stored (max_len, 1, d) as a frozen parameter, as in the published state_dict
        self.pe = nn.Parameter(table[:, None, :], requires_grad=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(x + self.pe[: x.shape[1], 0].to(x.dtype))


class _Frequencies(nn.Module):
    """Holds `inv_freq` (a frozen parameter in the published code) under the published name `penc`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = int(math.ceil(channels / 4) * 2)
        self.inv_freq = nn.Parameter(1.0 / (10000 ** (torch.arange(0, half, 2).float() / half)), requires_grad=False)


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


class TransformerStack(nn.Module):
    """`layers` applied in turn (published: `nn.TransformerEncoder`; AV-SepMamba stacks its BiMamba blocks with it)."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


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
    from tse_cli.checkpoint import CheckpointError

    def count(pattern: str) -> int:
        prefix, suffix = pattern.split("#")
        return len({k[len(prefix) :].split(".")[0] for k in state if k.startswith(prefix) and suffix in k})

    encoder = state.get("AudioEncoder.conv1d.weight")
    linear1 = state.get("Separator.dual_mdl.0.intra_mdl.mdl.layers.0.linear1.weight")
    if encoder is None or linear1 is None:
        raise CheckpointError(f"{path}: not an AV-SepFormer checkpoint (no AudioEncoder / intra transformer weights)")
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

    Reads the torch pickle with `torch.load(weights_only=True)` only. Accepts the bare state_dict ignite writes
    for a single model, or one under "model" / "model_state_dict" / "state_dict", with or without the
    "module." prefix of DistributedDataParallel. Width and layer counts are read off the weights (published:
    d_model 256, FFN 1024, 8 + 8 layers, 2 blocks; 8 heads assumed); every key and shape must then match
    (`CheckpointError` names what does not).
    """
    from tse_cli.checkpoint import CheckpointError
    from tse_cli.models import create

    path = Path(checkpoint_path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except Exception as err:  # noqa: BLE001 (any unpickling failure means the same thing to the user)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({reason})") from None
    for key in ("model", "model_state_dict", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: no state_dict of tensors in this checkpoint")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    arch, config = _published_config(path, state)
    model = create(arch, **config)
    expected = model.state_dict()
    problems = {
        "missing": [k for k in expected if k not in state],
        "unexpected": [k for k in state if k not in expected],
        "wrong shape": [k for k in expected if k in state and state[k].shape != expected[k].shape],
    }
    if any(problems.values()):
        details = "; ".join(f"{what} {', '.join(keys[:3])} ({len(keys)})" for what, keys in problems.items() if keys)
        raise CheckpointError(f"{path}: weights do not match {model.arch}: {details}")
    model.load_state_dict(state, strict=True)
    return model.eval()
