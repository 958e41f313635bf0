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

from tse_cli.atomic import atomic_dir, follow_umask
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
    follow_umask(directory / "model.safetensors")  # safetensors writes 0o600


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


def check_weights(path: Path, model: nn.Module) -> None:
    """Raise `CheckpointError` (one line naming `path`) unless the safetensors file `path` is complete and holds
    exactly `model`'s tensors with its shapes (`models.published.mismatches`); only the file's header is read."""
    from safetensors import SafetensorError, safe_open

    from tse_cli.models.published import mismatches

    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {key: f.get_slice(key).get_shape() for key in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(
            f"{path}: not a complete safetensors file ({' '.join(str(err).split())}); it is truncated or damaged: "
            "copy, download or convert it again"
        ) from None
    problems = mismatches(model.state_dict(), {k: torch.empty(s, device="meta") for k, s in shapes.items()})
    if problems:
        arch = getattr(model, "arch", type(model).__name__)
        raise CheckpointError(f"{path}: weights do not match {arch} with its config's sizes: {'; '.join(problems)}")


def load_weights(model: nn.Module, path: Path, device: str | torch.device | None = None) -> None:
    """Load the safetensors file `path` into `model` strictly (onto `device`, default the model's) after
    `check_weights`; every problem is a one-line `CheckpointError`."""
    from safetensors import SafetensorError

    check_weights(path, model)
    try:
        load_model(model, str(path), strict=True, device=str(device or next(model.parameters()).device))
    except (SafetensorError, OSError, RuntimeError) as err:
        raise CheckpointError(f"{path}: cannot load ({' '.join(str(err).split())[:300]})") from None


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Build the model a checkpoint directory describes and load its weights strictly, in eval mode.

    Sizes beyond this machine's (or `device`'s) memory are refused before anything is allocated
    (`models.budget`), and the weights file's header is checked against the model before its data is read;
    every problem is a one-line `CheckpointError` naming the file."""
    from tse_cli.models import create
    from tse_cli.models.budget import check_fits

    config = read_config(directory)
    origin = Path(directory) / "config.json"
    weights = Path(directory) / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"{directory}: model.safetensors is missing")
    arguments = config.get("config", {})
    if not isinstance(arguments, dict):
        raise CheckpointError(f"{origin}: config must be an object of constructor arguments")
    try:
        if torch.device(device).type != "cpu":
            check_fits(config["arch"], arguments, device)
        model = create(config["arch"], **arguments)
    except ValueError as err:  # an unknown architecture or argument, or sizes too large for this machine
        raise CheckpointError(f"{origin}: {err}") from None
    load_weights(model, weights, "cpu")
    return model.to(device).eval()
