"""Training-state files beside a checkpoint: optimizer, scheduler, RNG and counters, with no pickling.

A nested state (dicts, lists, numbers, strings, tensors; e.g. `optimizer.state_dict()`) is split into
`training_state.safetensors` (every tensor, under a path-like key) and `training_state.json` (the structure,
each tensor replaced by `{"__tensor__": key}`). Loading reverses it; nothing is ever unpickled.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tse_cli.atomic import follow_umask

TENSORS = "training_state.safetensors"
STRUCTURE = "training_state.json"


def _split(value: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        tensors[key] = value.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(value, dict):
        return {"__dict__": [[k, _split(v, f"{key}.{k}", tensors)] for k, v in value.items()]}
    if isinstance(value, list | tuple):
        return [_split(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": repr(value)}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot store {type(value).__name__} at {key} in a training state")


def _join(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if "__tensor__" in value:
            return tensors[value["__tensor__"]]
        if "__float__" in value:
            return float(value["__float__"])
        return {k: _join(v, tensors) for k, v in value["__dict__"]}
    if isinstance(value, list):
        return [_join(v, tensors) for v in value]
    return value


def save_state(state: dict[str, Any], directory: str | Path) -> None:
    """Write `state` into `directory` (which must exist) as the two training-state files."""
    tensors: dict[str, torch.Tensor] = {}
    structure = _split(state, "state", tensors)
    save_file(tensors, str(Path(directory) / TENSORS))
    follow_umask(Path(directory) / TENSORS)  # safetensors writes 0o600
    (Path(directory) / STRUCTURE).write_text(json.dumps(structure) + "\n")


def load_state(directory: str | Path) -> dict[str, Any]:
    """Read the state written by `save_state` (dict keys keep their types: int keys stay ints)."""
    directory = Path(directory)
    for name in (TENSORS, STRUCTURE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory}: {name} is missing (not a resumable checkpoint)")
    return _join(json.loads((directory / STRUCTURE).read_text()), load_file(str(directory / TENSORS)))
