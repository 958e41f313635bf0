"""Tiny configurations of every architecture in the registry, the one place tests take them from.

Each is the smallest network of its family that still exercises every part (two encoder layers, two inter
layers so that a cross-modal layer is followed by a self-attention one, a 0.32 s DPM-TSE window): built in
milliseconds and run on short audio on a 2-core CPU. `-large` / `-small` names differ only in the widths these
configs set, so their tiny builds are the same network.

    from tiny import TINY, tiny
    model = tiny("wavemamba-small", d_state=8)   # create(name) with TINY[name], then the overrides

The `tiny_checkpoint` fixture (conftest.py) writes one as a checkpoint directory.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from tse_cli.models import ARCHITECTURES, create

WAVEFORMER = {"enc_dim": 32, "dec_dim": 16, "num_enc_layers": 2}
WAVEMAMBA = {"enc_dim": 32, "dec_dim": 16, "num_enc_layers": 2}
DPM_TSE = {"channels": [32, 32, 64, 64], "attention_head_dim": 8, "vocoder_channels": 64, "window_seconds": 0.32}
AV_SEPFORMER = {"d_model": 16, "n_heads": 2, "d_ffn": 32, "intra_layers": 1, "inter_layers": 2}
AV_SEPMAMBA = {"d_model": 16, "d_state": 4, "intra_layers": 1, "inter_layers": 2}

# by model class: a new class in the registry fails here until it has a tiny config
_BY_CLASS = {
    "Waveformer": WAVEFORMER,
    "WaveMamba": WAVEMAMBA,
    "DPMTSE": DPM_TSE,
    "AVSepFormer": AV_SEPFORMER,
    "AVSepMamba": AV_SEPMAMBA,
}

# registry name -> tiny constructor overrides
TINY: dict[str, dict[str, Any]] = {name: _BY_CLASS[entry.cls] for name, entry in ARCHITECTURES.items()}


def tiny_config(name: str, **overrides: Any) -> dict[str, Any]:
    """The constructor overrides of `name`'s tiny build (a fresh dict), with `overrides` on top."""
    return {**TINY[name], **overrides}


def tiny(name: str, **overrides: Any) -> nn.Module:
    """Architecture `name` built at its tiny config (random weights from the global RNG), `overrides` on top."""
    return create(name, **tiny_config(name, **overrides))
