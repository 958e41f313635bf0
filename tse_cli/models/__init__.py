"""Architectures by name: the registry `ARCHITECTURES` and `create`.

Every model follows the protocol of `tse_cli.models.protocol` (sample rate, clue kind, class limit, inference
options; causal models stream, window models declare their window). Each registry entry is an `Architecture`:
where the class lives, its published constructor arguments, and what callers need to know before building it
(sample rate, clue kind and rate, class limit), so that the CLI can validate a request without importing a
model module, or torch: this package imports neither until `create` runs.

`create(name, **overrides)` builds one with its published defaults; the model remembers `arch` (its name)
and `config` (the constructor arguments), which is all a checkpoint directory needs besides the weights.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from importlib import import_module
from typing import TYPE_CHECKING, Any

from tse_cli.visual import CLUE_RATE

if TYPE_CHECKING:
    from torch import nn

DCC_RATE = 44100  # Waveformer and WaveMamba (Hz)
SPEECH_RATE = 16000  # the AV models and DPM-TSE (Hz)


@dataclass(frozen=True)
class Architecture:
    """One registry entry: class `cls` of module `module`, built with `defaults` (the published constructor
    arguments), and the protocol attributes its instances declare (`tse_cli.models.protocol`): `sample_rate`
    (Hz), `clue_kind` ("class" or "visual"), `clue_rate` (visual frames per second, None for class queries),
    `max_classes` (None for no limit) and `causal` (a `CausalModel` that streams, not a `WindowModel`)."""

    module: str
    cls: str
    sample_rate: int
    clue_kind: str
    defaults: dict[str, Any] = field(default_factory=dict)
    clue_rate: float | None = None
    max_classes: int | None = None
    causal: bool = False

    def load_class(self) -> type[nn.Module]:
        """The model class (imports its module, and torch)."""
        return getattr(import_module(self.module), self.cls)


def _waveformer(**defaults: Any) -> Architecture:
    return Architecture("tse_cli.models.waveformer", "Waveformer", DCC_RATE, "class", defaults, causal=True)


def _wavemamba(**defaults: Any) -> Architecture:
    return Architecture("tse_cli.models.wavemamba", "WaveMamba", DCC_RATE, "class", defaults, causal=True)


def _av(module: str, cls: str, d_model: int) -> Architecture:
    return Architecture(module, cls, SPEECH_RATE, "visual", {"d_model": d_model}, clue_rate=CLUE_RATE)


def _dpm_tse(channels: list[int]) -> Architecture:
    return Architecture("tse_cli.models.dpmtse", "DPMTSE", SPEECH_RATE, "class", {"channels": channels}, max_classes=1)


ARCHITECTURES: dict[str, Architecture] = {
    "av-sepformer-large": _av("tse_cli.models.avsepformer", "AVSepFormer", 256),
    "av-sepformer-small": _av("tse_cli.models.avsepformer", "AVSepFormer", 128),
    "av-sepmamba-large": _av("tse_cli.models.avsepmamba", "AVSepMamba", 256),
    "av-sepmamba-small": _av("tse_cli.models.avsepmamba", "AVSepMamba", 128),
    "dpm-tse": _dpm_tse([128, 256, 512, 512]),
    "dpm-tse-large": _dpm_tse([192, 384, 768, 768]),
    "waveformer": _waveformer(),  # any published config (load_published)
    "waveformer-large": _waveformer(enc_dim=512, dec_dim=256),
    "waveformer-small": _waveformer(enc_dim=512, dec_dim=128),
    "wavemamba-large": _wavemamba(enc_dim=512, dec_dim=256),
    "wavemamba-small": _wavemamba(enc_dim=512, dec_dim=128),
}


def architectures() -> list[str]:
    """Names accepted by `create`, sorted."""
    return sorted(ARCHITECTURES)


def architecture(name: str) -> Architecture:
    """The registry entry `name`; ValueError naming the known ones when there is none."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(architectures())}") from None


def create(name: str, **overrides: Any) -> nn.Module:
    """Build architecture `name` with its published arguments, replaced by `overrides` (tiny test configs).

    Raises ValueError (one line) for an unknown name or argument, or arguments the constructor refuses, and
    `budget.ModelSizeError` for sizes beyond this machine's memory (checked on shapes only, before anything is
    allocated; not when building on the meta device)."""
    import torch

    from tse_cli.models import budget

    entry = architecture(name)
    config = {**entry.defaults, **overrides}
    builder = entry.load_class()
    known = inspect.signature(builder).parameters
    unknown = sorted(set(config) - set(known))
    if unknown:
        raise ValueError(f"{name}: unknown argument(s) {', '.join(unknown)}; known: {', '.join(known)}")
    if not budget.measuring() and torch.get_default_device().type != "meta":
        budget.check_fits(name, overrides)
    try:
        model = builder(**config)
    except budget.ModelSizeError:
        raise
    except (TypeError, ValueError, RuntimeError) as err:  # bad values: wrong types, sizes the layers refuse
        detail = " ".join(str(err).split())
        raise ValueError(f"{name} with {_listed(overrides) or 'its defaults'}: {detail}") from None
    model.arch = name
    model.config = config
    return model


def _listed(config: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in config.items())
