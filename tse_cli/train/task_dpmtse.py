"""Training task for DPM-TSE (16 kHz diffusion over log-mels, one class per query).

Data: a `tse mix --recipe dpm-tse` set (`tse_cli.data.sets.DpmSet`: 10 s mixtures, one target each, with the
target's onset/offset). Training follows the published recipe: 4 s crops that overlap the target event, the
U-Net fitted to the velocity (MSE, `DPMTSE.velocity_loss`) at uniform random timesteps, AdamW lr 1e-4 / weight
decay 1e-4, no gradient clipping, a constant learning rate; the loop runs bfloat16 autocast on CUDA. The
vocoder stays frozen: load the published one with the `vocoder` option. Evaluation samples each whole clip
(DDIM, `eval_steps` steps, eta `eval_eta`, seeded) and scores the vocoded waveform. Options
(`--task-arg NAME=VALUE`):

- `crop_seconds` (4.0): training crop length (s); crops overlap the target event;
- `vocoder` (""): a DPM-TSE checkpoint directory (e.g. `tse convert dpm-tse` output) or the published
  first_stage.pt whose vocoder weights replace the model's before training ("" keeps them: only sensible when
  resuming or fine-tuning a checkpoint that already has them);
- `eval_steps` (50), `eval_eta` (1.0), `eval_seed` (0): the sampler used for validation and `tse eval`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from tse_cli.classes import FSD_CLASSES
from tse_cli.train.metrics import separation_metrics
from tse_cli.train.tasks import DataError, EpochSet, Task, check_splits, concat_metrics, uniform_groups, unwrap


def event_crop_start(total: int, length: int, onset: int, offset: int, rng: np.random.Generator) -> int:
    """Start of a uniformly drawn `length`-sample crop of a `total`-sample clip overlapping [onset, offset).

    Falls back to any crop when the event is unknown (NaN onset) or outside the clip; 0 when the clip is shorter.
    """
    if total <= length:
        return 0
    low, high = max(0, onset - length + 1), min(offset - 1, total - length)
    if low > high:
        low, high = 0, total - length
    return int(rng.integers(low, high + 1))


class DpmTrainSet(EpochSet):
    """Items of a dpm-tse set as batches expect them; training items are event-overlapping crops."""

    def __init__(self, root: Path, split: str, options: dict[str, Any], train: bool, seed: int) -> None:
        from tse_cli.data.sets import open_set

        super().__init__(open_set(root, split, validate=False, with_reference=False), seed)
        self.crop = float(options["crop_seconds"]) if train else 0.0

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.set[index]
        mixture, target, rate = item["mixture"], item["target"], int(item["sample_rate"])
        if self.crop:
            length = round(self.crop * rate)
            onset, offset = item["onset"], item["offset"]
            known = math.isfinite(onset) and math.isfinite(offset)
            event = (round(onset * rate), round(offset * rate)) if known else (0, mixture.shape[-1])
            start = event_crop_start(mixture.shape[-1], length, *event, self.rng(index))
            pad = (0, max(0, start + length - mixture.shape[-1]))
            mixture = nn.functional.pad(mixture[..., start : start + length], pad)
            target = nn.functional.pad(target[..., start : start + length], pad)
        return {
            "mixture": mixture,
            "target": target,
            "clue": item["query"],
            "label": FSD_CLASSES[item["label"]],
            "sample_rate": torch.tensor(rate),
        }


class DpmTask(Task):
    """DPM-TSE (see the module docstring)."""

    family = "dpm-tse"
    hyper: dict[str, Any] = {
        "optimizer": "adamw",
        "lr": 1e-4,
        "weight_decay": 1e-4,
        "batch_size": 16,
        "grad_clip": 0.0,
        "scheduler": "none",
        "epochs": 100,
    }
    options = {"crop_seconds": 4.0, "vocoder": "", "eval_steps": 50, "eval_eta": 1.0, "eval_seed": 0}

    def __init__(self) -> None:
        self._vocoder_loaded = False

    def validate(self, root: Path, splits: tuple[str, ...]) -> None:
        from tse_cli.data.sets import sample_rate, validate_set
        from tse_cli.models.mel import SAMPLE_RATE

        def check(root: Path, split: str) -> None:
            recipe = validate_set(root, split)
            rate = sample_rate(root, recipe)
            if recipe != "dpm-tse" or rate != SAMPLE_RATE:
                raise DataError(
                    f"{root}: a {recipe} set at {rate} Hz; DPM-TSE trains on `tse mix --recipe dpm-tse` sets (16 kHz)"
                )

        check_splits(root, splits, check, (ValueError, FileNotFoundError))

    def dataset(self, root: Path, split: str, options: dict[str, Any], train: bool, seed: int = 0) -> Dataset:
        return DpmTrainSet(root, split, options, train, seed)

    def _prepare(self, model: nn.Module, options: dict[str, Any]) -> None:
        """Load the pretrained vocoder named by the `vocoder` option, once."""
        if options["vocoder"] and not self._vocoder_loaded:
            from tse_cli.models.dpmtse import load_vocoder

            load_vocoder(unwrap(model), options["vocoder"])
            self._vocoder_loaded = True

    def loss(self, model: nn.Module, batch: dict[str, Any], options: dict[str, Any]) -> Tensor:
        self._prepare(model, options)
        return model(batch["mixture"], batch["clue"], target=batch["target"])

    def evaluate(self, model: nn.Module, batch: dict[str, Any], options: dict[str, Any]) -> dict[str, Tensor]:
        self._prepare(model, options)
        net = unwrap(model)
        parts = []
        for rows in uniform_groups(batch, "length"):  # equal lengths run as one batch; otherwise each alone, unpadded
            n = int(batch["length"][rows][0])
            mixture, target = batch["mixture"][rows, :, :n], batch["target"][rows, :, :n]
            generator = torch.Generator(mixture.device).manual_seed(int(options["eval_seed"]))
            estimate = net(
                mixture, batch["clue"][rows], steps=options["eval_steps"], eta=options["eval_eta"], generator=generator
            )
            parts.append(separation_metrics(estimate, mixture, target))
        return concat_metrics(parts)


def task(arch: str) -> Task:
    """The task of the `dpm-tse` architectures."""
    return DpmTask()
