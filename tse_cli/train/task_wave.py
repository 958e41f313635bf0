"""Training task for the waveform class-query models, Waveformer and WaveMamba (44.1 kHz, 41-class multi-hot).

Data: a folder made by `tse mix` (either recipe; `tse_cli.data.sets.open_set`). Training follows the
Waveformer paper: loss -(0.9 SNR + 0.1 SI-SNR) on the waveform and, on waveformer-recipe sets (which keep the
isolated events per label), multi-target queries: each example queries a random 1..3 of its mixture's labels
and its target is the sum of those labels' events (drawn per (seed, epoch, index) by the set).

Options (`--task-arg NAME=VALUE`):

- `multi_target` (true): sample multi-target queries where the set allows it;
- `max_targets` (3): the most labels one training query may name;
- `eval_max_targets` (1): the same for validation and `tse eval` (1: one class per query, as Table II);
- `crop_seconds` (0): train on random crops of this length (s) that hold target energy (0: whole mixtures);
- `crop_min_energy` (0.5): a crop holds at least this fraction of the target energy of the best crop (lower
  values train more on target-free stretches, which whole scenes are mostly made of);
- `snr_weight` (0.9), `si_snr_weight` (0.1): the loss weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from tse_cli.classes import FSD_CLASSES
from tse_cli.resample import resample
from tse_cli.train.losses import snr_sisnr_loss
from tse_cli.train.metrics import separation_metrics
from tse_cli.train.tasks import EpochSet, Task, check_splits, concat_metrics, set_rate, uniform_groups, unwrap


class WaveSet(EpochSet):
    """Items of a `tse mix` set as batches expect them; training items may be multi-target and cropped."""

    def __init__(self, root: Path, split: str, options: dict[str, Any], train: bool, seed: int) -> None:
        from tse_cli.data.sets import open_set

        targets = options["max_targets"] if train and options["multi_target"] else options["eval_max_targets"]
        super().__init__(open_set(root, split, max_targets=targets, seed=seed, validate=False), seed)
        self.crop = options["crop_seconds"] if train else 0.0
        self.min_energy = options["crop_min_energy"]

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the multi-target draws and crops."""
        super().set_epoch(epoch)
        self.set.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.set[index]
        mixture, target, rate = item["mixture"], item["target"], int(item["sample_rate"])
        if self.crop:
            mixture, target = _crop(mixture, target, round(self.crop * rate), self.min_energy, self.rng(index))
        return {
            "mixture": mixture,
            "target": target,
            "clue": item["query"],
            "label": "+".join(FSD_CLASSES[i] for i in torch.nonzero(item["query"]).flatten().tolist()),
            "sample_rate": torch.tensor(rate),
        }


def _crop(
    mixture: Tensor, target: Tensor, length: int, min_energy: float, rng: np.random.Generator
) -> tuple[Tensor, Tensor]:
    """A random `length`-sample crop among those holding at least `min_energy` x the best crop's target energy."""
    total = mixture.shape[-1]
    if total <= length:
        pad = (0, length - total)
        return nn.functional.pad(mixture, pad), nn.functional.pad(target, pad)
    energy = torch.cat([torch.zeros(1, dtype=torch.float64), target.double().pow(2).sum(0).cumsum(0)])
    window = energy[length:] - energy[:-length]  # target energy of the crop starting at each sample
    candidates = torch.nonzero((window >= min_energy * window.max()) & (window > 0)).flatten()
    if len(candidates) == 0:  # a silent target: any crop
        candidates = torch.arange(len(window))
    start = int(candidates[rng.integers(len(candidates))])
    return mixture[..., start : start + length], target[..., start : start + length]


class WaveTask(Task):
    """Waveformer / WaveMamba (see the module docstring)."""

    family = "waveformer/wavemamba"
    hyper: dict[str, Any] = {}  # the generic defaults are this family's paper values
    options = {
        "multi_target": True,
        "max_targets": 3,
        "eval_max_targets": 1,
        "crop_seconds": 0.0,
        "crop_min_energy": 0.5,
        "snr_weight": 0.9,
        "si_snr_weight": 0.1,
    }

    def validate(self, root: Path, splits: tuple[str, ...]) -> None:
        from tse_cli.data.sets import validate_set

        check_splits(root, splits, validate_set, (ValueError, FileNotFoundError))

    def data_rate(self, root: Path) -> int:
        return set_rate(root)

    def dataset(self, root: Path, split: str, options: dict[str, Any], train: bool, seed: int = 0) -> Dataset:
        return WaveSet(root, split, options, train, seed)

    def loss(self, model: nn.Module, batch: dict[str, Any], options: dict[str, Any]) -> Tensor:
        estimate = model(batch["mixture"], batch["clue"])
        return snr_sisnr_loss(estimate.float(), batch["target"], options["snr_weight"], options["si_snr_weight"])

    def evaluate(self, model: nn.Module, batch: dict[str, Any], options: dict[str, Any]) -> dict[str, Tensor]:
        model_rate = unwrap(model).sample_rate
        # one forward for examples of one length and rate (the usual case), else one per example; causal models
        # are unaffected by right padding, but resampling is not, so metrics are always on unpadded signals
        parts = []
        for group in uniform_groups(batch, "length", "sample_rate"):
            n, rate = int(batch["length"][group][0]), int(batch["sample_rate"][group][0])
            mixture, target = batch["mixture"][group, :, :n], batch["target"][group, :, :n]
            estimate = model(resample(mixture, rate, model_rate), batch["clue"][group])
            estimate = resample(estimate, model_rate, rate)[..., :n]
            parts.append(separation_metrics(estimate, mixture, target))
        return concat_metrics(parts)


def task(arch: str) -> Task:
    """The task of `waveformer-*` and `wavemamba-*` architectures."""
    return WaveTask()
