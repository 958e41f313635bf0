"""Training hyper-parameters: defaults (the Waveformer/WaveMamba paper values), files and overrides.

Precedence, lowest first: the defaults below, the task family's `hyper` (see `tse_cli.train.tasks`), a config
file (`--config FILE`, JSON or TOML), then command-line options. The resolved configuration is saved in the
run folder as `train.json`, which `--config` accepts as is.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """An unknown key or a value of the wrong type in a training configuration."""


@dataclass
class TrainConfig:
    """Everything that determines a training run (units in the comments)."""

    arch: str = ""
    data: str = ""  # data folder made by `tse mix`
    out: str = ""  # run folder
    model_args: dict[str, Any] = field(default_factory=dict)  # overrides of the architecture's arguments
    task: dict[str, Any] = field(default_factory=dict)  # family options (see the task's `options`)
    train_split: str = "train"
    val_split: str = "val"
    epochs: int = 150
    max_steps: int = 0  # stop after this many optimizer steps (0: no limit)
    batch_size: int = 16  # per process
    optimizer: str = "adam"  # adam | adamw
    lr: float = 5e-4
    weight_decay: float = 0.0
    grad_clip: float = 0.5  # max gradient L2 norm (0: off)
    scheduler: str = "plateau"  # plateau | none
    fixed_epochs: int = 50  # epochs at the initial rate before the plateau schedule starts
    plateau_factor: float = 0.1
    plateau_patience: int = 5  # epochs
    plateau_threshold: float = 0.1  # dB, absolute
    min_lr: float = 5e-6
    seed: int = 0
    num_workers: int = 2  # data-loading processes per training process
    save_every: int = 1000  # optimizer steps between `last` checkpoints (and at every epoch end)
    val_limit: int = 0  # validate on the first N examples only (0: all)
    log_every: int = 10  # optimizer steps between metrics lines
    device: str = "auto"  # auto | cpu | cuda | cuda:N (torchrun: the local rank's GPU)
    amp: bool = True  # bfloat16 autocast on CUDA

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain JSON-able values."""
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
# setting -> (lowest, highest, whether the lowest itself is allowed); None: unbounded on that side
_RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "epochs": (1, None, True),
    "max_steps": (0, None, True),
    "batch_size": (1, None, True),
    "lr": (0, None, False),
    "weight_decay": (0, None, True),
    "grad_clip": (0, None, True),
    "fixed_epochs": (0, None, True),
    "plateau_factor": (0, 1, False),
    "plateau_patience": (0, None, True),
    "plateau_threshold": (0, None, True),
    "min_lr": (0, None, True),
    "seed": (0, 2**63 - 1, True),
    "num_workers": (0, None, True),
    "save_every": (0, None, True),
    "val_limit": (0, None, True),
    "log_every": (1, None, True),
}
_CHOICES = {"optimizer": ("adam", "adamw"), "scheduler": ("plateau", "none")}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a JSON or TOML config file into a dict of overrides."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config file ({err.strerror})") from None
    try:
        return tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{path}: invalid {'TOML' if path.suffix == '.toml' else 'JSON'} ({err})") from None


def _coerce(name: str, value: Any, like: Any) -> Any:
    if isinstance(like, bool):
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "0", "false", "no"):
            return value.lower() in ("1", "true", "yes")
        if isinstance(value, bool):
            return value
    elif isinstance(like, int) and isinstance(value, int | str) and not isinstance(value, bool):
        try:
            return int(value)
        except ValueError:
            pass
    elif isinstance(like, float) and isinstance(value, int | float | str) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            pass
    elif isinstance(like, str) and isinstance(value, str) or isinstance(like, dict) and isinstance(value, dict):
        return value
    raise ConfigError(f"{name}: expected {type(like).__name__}, got {value!r}")


def build_config(*layers: dict[str, Any]) -> TrainConfig:
    """A `TrainConfig` from override dicts applied in order; `model_args` and `task` merge key by key."""
    config = TrainConfig()
    for layer in layers:
        for name, value in layer.items():
            if name not in FIELDS:
                raise ConfigError(f"unknown training setting {name!r}; known: {', '.join(FIELDS)}")
            current = getattr(config, name)
            value = _coerce(name, value, current)
            setattr(config, name, {**current, **value} if isinstance(current, dict) else value)
    _check_ranges(config)
    return config


def _check_ranges(config: TrainConfig) -> None:
    """Raise `ConfigError` for a value no run can use (a batch of 0, a negative rate, an unknown optimizer...)."""
    for name, (low, high, low_ok) in _RANGES.items():
        value = getattr(config, name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name}: must be a finite number, got {value}")
        if (low is not None and (value < low or (value == low and not low_ok))) or (high is not None and value > high):
            lowest = f"{'at least' if low_ok else 'more than'} {low}" if low is not None else ""
            highest = f"at most {high}" if high is not None else ""
            raise ConfigError(f"{name}: must be {' and '.join(b for b in (lowest, highest) if b)}, got {value}")
    for name, allowed in _CHOICES.items():
        if getattr(config, name) not in allowed:
            raise ConfigError(f"{name}: must be one of {', '.join(allowed)}, got {getattr(config, name)!r}")


def parse_assignments(pairs: list[str], what: str) -> dict[str, Any]:
    """`["enc_dim=128", "multi_target=false"]` -> {"enc_dim": 128, "multi_target": False} (JSON values, else str)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"{what}: expected NAME=VALUE, got {pair!r}")
        try:
            out[name.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[name.strip()] = raw
    return out
