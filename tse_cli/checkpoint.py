"""Checkpoint directories: `config.json` (architecture + constructor arguments) and `model.safetensors`.

This is the only format `tse` loads its own models from; published upstream formats are converted into it
(see `tse convert`). Nothing here unpickles anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from tse_cli.atomic import atomic_dir
from tse_cli.classes import FSD_CLASSES

FORMAT = "tse-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint directory that is missing files or does not describe a known architecture."""


def write_checkpoint(model: nn.Module, directory: Path, extra: dict[str, Any] | None = None) -> None:
    """Write `model`'s config.json and model.safetensors into the existing folder `directory` (not atomic: for a
    folder that is itself renamed into place afterwards, as `save_checkpoint` and the training loop do)."""
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": model.arch,
        "config": model.config,
        "sample_rate": model.sample_rate,
        "clue": model.clue_kind,
        **({"classes": list(FSD_CLASSES)} if model.clue_kind == "class" else {}),
        **(extra or {}),
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_model(model, str(directory / "model.safetensors"))


def save_checkpoint(model: nn.Module, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write `model` (built by `tse_cli.models.create`) as a checkpoint directory, atomically.

    The directory is assembled beside its destination and renamed into place, so a reader never sees half
    of it; an existing directory at `directory` is replaced.
    """
    directory = Path(directory)
    with atomic_dir(directory) as staging:
        write_checkpoint(model, staging, extra)
    return directory


def read_config(directory: str | Path) -> dict[str, Any]:
    """The parsed `config.json` of a checkpoint directory, validated."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{directory}: not a checkpoint directory (no config.json)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: cannot read a JSON config ({err})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT or "arch" not in config:
        raise CheckpointError(f"{path}: not a tse checkpoint config (missing format/arch)")
    return config


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Build the model a checkpoint directory describes and load its weights strictly, in eval mode."""
    from tse_cli.models import create

    config = read_config(directory)
    weights = Path(directory) / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"{directory}: model.safetensors is missing")
    model = create(config["arch"], **config.get("config", {}))
    load_model(model, str(weights), strict=True, device=str(device))
    return model.to(device).eval()
