"""Training tasks: what the common loop needs to know about one family of architectures.

`tse train` and `tse eval` are one loop for every model; a *task* supplies the family-specific parts. A family
registers lazily by architecture-name prefix -> module path in `FAMILIES`; the module defines

    def task(arch: str) -> Task

so importing `tse_cli.train` never imports a model family's data code until that family is used. To add a
family (DPM-TSE, the AV models), write `tse_cli/train/task_<family>.py` with a `Task` subclass and add one line
to `FAMILIES`.

A task answers five questions, always for a data folder `root` made by `tse mix` (or a user's own set in the
same layout):

- `validate(root, splits)`: is the folder usable for these splits? Raise `DataError` with a one-line message
  naming the file/folder and the problem; the loop calls it before building anything.
- `data_rate(root)`: the sample rate of the folder's audio (Hz), or None when `validate` already guarantees the
  family's rate; training refuses a folder at another rate than the architecture's (`check_rate`), while
  evaluation may resample.
- `dataset(root, split, options, train)`: a map-style `torch.utils.data.Dataset` whose items are dicts of
  tensors (see "Batches"). Training items may be random (crops, sampled queries); they must then draw from
  `example_rng(seed, epoch, index)` so that a run is reproducible and `--resume` replays it exactly. The loop
  calls `dataset.set_epoch(epoch)` when the dataset has that method.
- `collate(items)`: stack items into a batch (the default pads audio on the right and records `length`).
- `loss(model, batch, options)`: a scalar tensor to minimise (the loop handles autocast, DDP and clipping).
- `evaluate(model, batch, options)`: per-example metrics `{"si_snr", "si_snri", "snr", "snri"}` as (batch,)
  float64 tensors, computed on the unpadded signals at the data's sample rate.

Batches are dicts: `mixture` (batch, 1, samples) and `target` (batch, 1, samples) float32 at `sample_rate`
Hz, `clue` (batch, 41) multi-hot for class models or (batch, frames, 512) for visual ones, `length` (batch,)
int64 valid samples, `label` a list of per-example label strings ("+"-joined for multi-target queries).

`hyper` overrides the generic hyper-parameter defaults of `tse_cli.train.config.TrainConfig` (the paper values
of the family: learning rate, clipping, epochs...), and `options` declares the family's own settings with their
defaults (`--task-arg name=value` on the command line, `task.<name>` in a config file).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from tse_cli.errors import DataError

# architecture-name prefix -> module defining `task(arch) -> Task`; the longest matching prefix wins.
FAMILIES: dict[str, str] = {
    "wavemamba-": "tse_cli.train.task_wave",
    "waveformer-": "tse_cli.train.task_wave",
    "dpm-tse": "tse_cli.train.task_dpmtse",
    "av-": "tse_cli.train.task_av",
}


def check_splits(
    root: Path, splits: tuple[str, ...], check: Callable[[Path, str], object], errors: tuple[type[Exception], ...]
) -> None:
    """Raise `DataError` unless `root` is a folder and `check(root, split)` passes for every split; the `errors`
    it raises become `DataError`s with the same message."""
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    for split in splits:
        try:
            check(root, split)
        except errors as err:
            raise DataError(str(err)) from None


def example_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random generator for one training example: a pure function of (seed, epoch, index)."""
    return np.random.default_rng([seed, epoch, index])


class EpochSet(Dataset):
    """Base of the task datasets: a split (`self.set`) whose per-example randomness is `rng(index)`.

    `rng(index)` is `example_rng(seed, epoch, index)`, so draws are a pure function of (seed, epoch, index).
    """

    def __init__(self, items: Dataset, seed: int) -> None:
        self.set, self.seed, self.epoch = items, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the random draws."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.set)

    def rng(self, index: int) -> np.random.Generator:
        """The random generator of example `index` in the current epoch."""
        return example_rng(self.seed, self.epoch, index)


class Task(ABC):
    """The family-specific half of training and evaluation (see the module docstring)."""

    family: str = ""
    hyper: dict[str, Any] = {}
    options: dict[str, Any] = {}

    @abstractmethod
    def validate(self, root: Path, splits: tuple[str, ...]) -> None:
        """Raise `DataError` unless `root` holds usable data for every split in `splits`."""

    def data_rate(self, root: Path) -> int | None:
        """The sample rate (Hz) of the audio in `root`, None when `validate` already checks it."""
        return None

    @abstractmethod
    def dataset(self, root: Path, split: str, options: dict[str, Any], train: bool, seed: int = 0) -> Dataset:
        """A map-style dataset of item dicts (see "Batches") for one split."""

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Stack items: audio right-padded with zeros to the longest, `length` the valid samples."""
        return pad_collate(items)

    @abstractmethod
    def loss(self, model: nn.Module, batch: dict[str, Any], options: dict[str, Any]) -> Tensor:
        """The scalar training loss of `model` on `batch`."""

    @abstractmethod
    def evaluate(self, model: nn.Module, batch: dict[str, Any], options: dict[str, Any]) -> dict[str, Tensor]:
        """Per-example metrics (batch,) float64: `si_snr`, `si_snri`, `snr`, `snri`."""


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def uniform_groups(batch: dict[str, Any], *keys: str) -> list[slice]:
    """The whole batch as one group when every example has the same `keys` values (e.g. `length`), else one each."""
    if all(len(set(batch[key].tolist())) == 1 for key in keys):
        return [slice(None)]
    return [slice(i, i + 1) for i in range(len(batch[keys[0]]))]


def concat_metrics(parts: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Per-example metrics of consecutive sub-batches joined in order: {name: (batch,)}."""
    return {key: torch.cat([part[key].reshape(-1) for part in parts]) for key in (parts[0] if parts else {})}


def pad_collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch item dicts: tensors with a trailing time axis ("mixture", "target") padded, others stacked."""
    batch: dict[str, Any] = {}
    lengths = [item["mixture"].shape[-1] for item in items]
    longest = max(lengths)
    for key in items[0]:
        values = [item[key] for item in items]
        if key in ("mixture", "target"):
            batch[key] = torch.stack([nn.functional.pad(v, (0, longest - v.shape[-1])) for v in values])
        elif isinstance(values[0], Tensor):
            batch[key] = torch.stack(values)
        else:
            batch[key] = values
    batch["length"] = torch.tensor(lengths, dtype=torch.int64)
    return batch


def set_rate(root: Path) -> int:
    """The sample rate (Hz) of a `tse mix` set of either recipe (its recipe.json, else the recipe's default)."""
    from tse_cli.data.sets import detect_recipe, sample_rate

    return sample_rate(root, detect_recipe(root))


def check_rate(task: Task, root: Path, arch: str) -> None:
    """Raise `DataError` when the audio in `root` is not at architecture `arch`'s sample rate (training only:
    a model trained on audio at another rate would learn the wrong band, silently)."""
    from tse_cli.models import architecture

    rate, wanted = task.data_rate(root), architecture(arch).sample_rate
    if rate is not None and rate != wanted:
        recipe = "waveformer" if wanted == 44100 else "dpm-tse"
        raise DataError(
            f"{root}: audio at {rate} Hz, but {arch} works at {wanted} Hz; train it on a set at its rate "
            f"(e.g. `tse mix --recipe {recipe}`)"
        )


def family_of(arch: str) -> str | None:
    """The `FAMILIES` prefix that `arch` belongs to, or None."""
    matches = [prefix for prefix in FAMILIES if arch.startswith(prefix)]
    return max(matches, key=len) if matches else None


def get_task(arch: str) -> Task:
    """The task for architecture `arch`, importing its family module on first use."""
    prefix = family_of(arch)
    if prefix is None:
        raise ValueError(f"no training task for architecture {arch!r}; families: {', '.join(sorted(FAMILIES))}")
    try:
        module = import_module(FAMILIES[prefix])
    except ModuleNotFoundError as err:
        if err.name != FAMILIES[prefix]:
            raise
        raise ValueError(f"training for {arch!r} is not available yet ({FAMILIES[prefix]} is missing)") from None
    return module.task(arch)
