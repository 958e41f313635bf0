"""Waveformer (Veluri et al., 2023): causal target sound extraction at 44.1 kHz from a 41-class multi-hot query.

The DCC chassis (`tse_cli.models.dcc.DCCExtractor`: encoder, label integration, mask, synthesis, streaming)
with the published decoder: a chunked causal transformer whose chunks of `dec_chunk_size` frames each see
`dec_buf_len` past frames. Parameter and buffer names follow the published `src/training/dcc_tf.py`, so its
`model_state_dict` loads with `strict=True` (see `load_published`).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tse_cli.classes import NUM_CLASSES
from tse_cli.models.dcc import DCCExtractor, context_buffers, extend
from tse_cli.models.positions import sinusoid_table
from tse_cli.models.published import PublishedFormatError, load_strict, read_torch_file, tensor_dict
from tse_cli.models.streaming import ContextBuffer

# decoder: chunked causal transformer


class SinusoidalPositions(nn.Module):
    """Sinusoidal positional encoding table `pe` (1, max_len, dim): sin on even channels, cos on odd ones."""

    def __init__(self, dim: int, max_len: int = 200):
        super().__init__()
        self.register_buffer("pe", sinusoid_table(max_len, dim)[None])

    def forward(self, length: int) -> Tensor:
        """The first `length` positions, (1, length, dim)."""
        return self.pe[:, :length]


class ChunkDecoderLayer(nn.Module):
    """Post-norm transformer decoder layer whose queries are the last `chunk` frames of each window.

    Self-attention: the chunk attends to its whole window (context + chunk, no mask); then cross-attention to the
    memory window; then a ReLU feed-forward of width `ff_dim`. Names match `torch.nn.TransformerDecoderLayer`.
    """

    def __init__(self, dim: int, nhead: int, ff_dim: int, dropout: float = 0.1):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, nhead, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(dim, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(dim, ff_dim)
        self.linear2 = nn.Linear(ff_dim, dim)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout, self.dropout1, self.dropout2, self.dropout3 = (nn.Dropout(dropout) for _ in range(4))

    def forward(self, tgt: Tensor, memory: Tensor, chunk: int) -> Tensor:
        """tgt, memory (windows, context + chunk, dim) -> (windows, chunk, dim)."""
        x = tgt[:, -chunk:]
        x = self.norm1(x + self.dropout1(self.self_attn(x, tgt, tgt, need_weights=False)[0]))
        x = self.norm2(x + self.dropout2(self.multihead_attn(x, memory, memory, need_weights=False)[0]))
        return self.norm3(x + self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(x))))))


class CausalTransformerDecoder(nn.Module):
    """Decodes frames in chunks of `chunk_size`, each seeing exactly `ctx_len` past frames and its own chunk.

    Frames inside a chunk see each other (no mask), so output is available per whole chunk: `granularity`.
    """

    def __init__(self, dim: int, ctx_len: int, chunk_size: int, num_layers: int, nhead: int, use_pos_enc: bool):
        super().__init__()
        self.dim, self.ctx_len, self.chunk_size, self.use_pos_enc = dim, ctx_len, chunk_size, use_pos_enc
        self.granularity = chunk_size
        self.pos_enc = SinusoidalPositions(dim, max_len=200)
        self.tf_dec_layers = nn.ModuleList(ChunkDecoderLayer(dim, nhead, 2 * dim) for _ in range(num_layers))

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> list[ContextBuffer]:
        """Context of the memory and of each layer's input."""
        return context_buffers([self.ctx_len] * (len(self.tf_dec_layers) + 1), batch, self.dim, device, dtype)

    def _windows(self, x: Tensor, positions: bool) -> Tensor:
        """(batch, ctx_len + n*chunk, dim) -> (batch*n, ctx_len + chunk, dim), hop `chunk`, maybe + positions."""
        window = self.ctx_len + self.chunk_size
        windows = x.unfold(1, window, self.chunk_size).transpose(2, 3).reshape(-1, window, self.dim)
        return windows + self.pos_enc(window) if positions else windows

    def decode(
        self, query: Tensor, memory: Tensor, state: list[ContextBuffer] | None = None
    ) -> tuple[Tensor, list[ContextBuffer] | None]:
        """query, memory (batch, frames, dim) -> (batch, frames, dim). Zero frames pad the last chunk.

        Streaming callers pass whole chunks (a multiple of `granularity`) except in the final call.
        """
        batch, frames, _ = query.shape
        pad = -frames % self.chunk_size
        if pad:
            query, memory = F.pad(query, (0, 0, 0, pad)), F.pad(memory, (0, 0, 0, pad))
        memory = self._windows(extend(state, 0, memory, self.ctx_len), self.use_pos_enc)
        for i, layer in enumerate(self.tf_dec_layers):
            # positions are added to the query windows of the first layer only
            windows = self._windows(extend(state, i + 1, query, self.ctx_len), self.use_pos_enc and i == 0)
            query = layer(windows, memory, self.chunk_size).reshape(batch, -1, self.dim)
        return query[:, :frames], state


# Waveformer


class Waveformer(DCCExtractor):
    """Waveformer as published; constructor arguments are the published config's `model_params`.

    Defaults are Waveformer-large (E512/D256, 3,878,144 parameters); small is dec_dim=128 (3,285,888).
    """

    def __init__(
        self,
        label_len: int = NUM_CLASSES,
        L: int = 32,
        enc_dim: int = 512,
        num_enc_layers: int = 10,
        dec_dim: int = 256,
        num_dec_layers: int = 1,
        dec_buf_len: int = 13,
        dec_chunk_size: int = 13,
        out_buf_len: int = 4,
        use_pos_enc: bool = True,
    ):
        decoder = CausalTransformerDecoder(dec_dim, dec_buf_len, dec_chunk_size, num_dec_layers, 8, use_pos_enc)
        super().__init__(label_len, L, enc_dim, num_enc_layers, dec_dim, out_buf_len, decoder)


# published checkpoint loader

PUBLISHED_PARAMS = (
    "label_len",
    "L",
    "enc_dim",
    "num_enc_layers",
    "dec_dim",
    "num_dec_layers",
    "dec_buf_len",
    "dec_chunk_size",
    "out_buf_len",
    "use_pos_enc",
)
# published Net arguments that this implementation supports only at their default (True)
FIXED_TRUE_PARAMS = ("skip_connection", "proj", "lookahead")


def _flag(value: Any) -> bool | None:
    """A published boolean: a JSON bool or the strings "true"/"false" (any case); None when neither."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def read_published_config(config_path: str | Path) -> dict[str, Any]:
    """The `Waveformer` constructor arguments from a published config.json (its `model_params`)."""
    path = Path(config_path)
    try:
        config = json.loads(path.read_text())
    except OSError as err:
        raise PublishedFormatError(f"{path}: cannot read ({err.strerror or err})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PublishedFormatError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_params"), dict):
        raise PublishedFormatError(f"{path}: not a Waveformer config (no model_params object)")
    if "model" in config and not str(config["model"]).endswith("dcc_tf"):
        raise PublishedFormatError(f"{path}: not a Waveformer config (model is {config['model']!r}, expected *.dcc_tf)")
    params = dict(config["model_params"])
    for name in FIXED_TRUE_PARAMS:
        if name in params and _flag(params.pop(name)) is not True:
            raise PublishedFormatError(f"{path}: model_params.{name} must be true (the only published setting)")
    missing = [name for name in PUBLISHED_PARAMS if name not in params]
    unknown = sorted(set(params) - set(PUBLISHED_PARAMS))
    if missing or unknown:
        problems = [f"missing {', '.join(missing)}"] * bool(missing) + [f"unknown {', '.join(unknown)}"] * bool(unknown)
        raise PublishedFormatError(f"{path}: not a Waveformer config (model_params: {'; '.join(problems)})")
    kwargs: dict[str, Any] = {}
    for name in PUBLISHED_PARAMS:
        value = params[name]
        if name == "use_pos_enc":
            value = _flag(value)
            if value is None:
                raise PublishedFormatError(f"{path}: model_params.use_pos_enc must be true or false")
        elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise PublishedFormatError(f"{path}: model_params.{name} must be a positive integer, got {value!r}")
        kwargs[name] = value
    if kwargs["enc_dim"] % kwargs["dec_dim"] or kwargs["dec_dim"] % 8:
        raise PublishedFormatError(f"{path}: model_params: enc_dim must be a multiple of dec_dim, dec_dim of 8 (heads)")
    return kwargs


def published_architecture(config_path: str | Path) -> tuple[str, dict[str, Any]]:
    """The architecture name and constructor arguments a published config.json describes (its size, without the
    weights): `waveformer-large`/`-small` when it is exactly one of those, else `waveformer` with its arguments."""
    kwargs = read_published_config(config_path)
    return _published_arch(kwargs), kwargs


def _published_arch(kwargs: dict[str, Any]) -> str:
    """'waveformer-large' / 'waveformer-small' when `kwargs` is exactly that published config, else 'waveformer'."""
    from tse_cli.models import ARCHITECTURES

    defaults = inspect.signature(Waveformer).parameters
    base = {name: defaults[name].default for name in PUBLISHED_PARAMS}
    for arch in ("waveformer-large", "waveformer-small"):
        if kwargs == {**base, **ARCHITECTURES[arch].defaults}:
            return arch
    return "waveformer"


def load_published(checkpoint_path: str | Path, config_path: str | Path) -> Waveformer:
    """The published Waveformer (`default_ckpt.pt` + its config.json) as a `Waveformer` in eval mode.

    The pickle is read with `torch.load(weights_only=True)` only (`tse_cli.models.published`). The model is built
    through `tse_cli.models.create` (so it carries `arch` and `config` for `save_checkpoint`) and loaded strictly.
    """
    from tse_cli.models import create

    checkpoint_path, config_path = Path(checkpoint_path), Path(config_path)
    kwargs = read_published_config(config_path)
    checkpoint = read_torch_file(checkpoint_path)
    state = tensor_dict(checkpoint, checkpoint_path, under=("model_state_dict",), what="model_state_dict")
    model = create(_published_arch(kwargs), **kwargs)
    load_strict(model, state, checkpoint_path, f"the Waveformer in {config_path.name}")
    return model.eval()
