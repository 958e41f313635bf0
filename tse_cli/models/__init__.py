"""Architectures by name.

Every model is a `torch.nn.Module` that declares what the extraction engine needs:

- `sample_rate: int` (Hz) and `clue_kind: str`, `"class"` (a (batch, 41) multi-hot float query over
  `tse_cli.classes.FSD_CLASSES`) or `"visual"` (lip embeddings, (batch, frames, 512) at 25 fps);
- `forward(mixture (batch, 1, samples), clue) -> (batch, 1, samples)`: the offline estimate;
- causal models (Waveformer, WaveMamba): `streamer(clue) -> Streamer` whose `feed(chunk (batch, 1, n))`
  returns the next finished output samples (batch, 1, m) for chunks of any size, and `flush()` returns the
  rest, so that the concatenation equals `forward` on the whole signal;
- window models (DPM-TSE, AV models): `window_samples: int`, the native window the engine overlap-adds;
  visual-clue models also declare `clue_rate` (clue frames per second, 25.0);
- optional: `max_classes` (how many classes one query may name; DPM-TSE: 1, so a front end refuses unions
  before any work), and extra keyword arguments of `forward` for inference options (DPM-TSE: `steps`, `eta`,
  `generator`, and `progress(done, total)` called after each diffusion step).

`create(name, **overrides)` builds one with its published defaults; the model remembers `arch` (its name)
and `config` (the constructor arguments), which is all a checkpoint directory needs besides the weights.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from torch import nn

# name -> (module, class, published constructor arguments)
ARCHITECTURES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "av-sepformer-large": ("tse_cli.models.avsepformer", "AVSepFormer", {"d_model": 256}),
    "av-sepformer-small": ("tse_cli.models.avsepformer", "AVSepFormer", {"d_model": 128}),
    "av-sepmamba-large": ("tse_cli.models.avsepmamba", "AVSepMamba", {"d_model": 256}),
    "av-sepmamba-small": ("tse_cli.models.avsepmamba", "AVSepMamba", {"d_model": 128}),
    "dpm-tse": ("tse_cli.models.dpmtse", "DPMTSE", {"channels": [128, 256, 512, 512]}),
    "dpm-tse-large": ("tse_cli.models.dpmtse", "DPMTSE", {"channels": [192, 384, 768, 768]}),
    "waveformer": ("tse_cli.models.waveformer", "Waveformer", {}),  # any published config (load_published)
    "waveformer-large": ("tse_cli.models.waveformer", "Waveformer", {"enc_dim": 512, "dec_dim": 256}),
    "waveformer-small": ("tse_cli.models.waveformer", "Waveformer", {"enc_dim": 512, "dec_dim": 128}),
    "wavemamba-large": ("tse_cli.models.wavemamba", "WaveMamba", {"enc_dim": 512, "dec_dim": 256}),
    "wavemamba-small": ("tse_cli.models.wavemamba", "WaveMamba", {"enc_dim": 512, "dec_dim": 128}),
}


def architectures() -> list[str]:
    """Names accepted by `create`, sorted."""
    return sorted(ARCHITECTURES)


def create(name: str, **overrides: Any) -> nn.Module:
    """Build architecture `name` with its published arguments, replaced by `overrides` (tiny test configs)."""
    try:
        module, cls, defaults = ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(architectures())}") from None
    config = {**defaults, **overrides}
    model = getattr(import_module(module), cls)(**config)
    model.arch = name
    model.config = config
    return model
