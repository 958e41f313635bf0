"""Training task for the audio-visual models, AV-SepFormer and AV-SepMamba (16 kHz, lip-embedding clues).

Data: a MuSE-style set (`tse_cli.data.muse`): per mixture folder `mixture.wav`, `s0.wav`, `s1.wav`,
`v0_embedding.npy`, `v1_embedding.npy`, listed by `<split>.scp` or found under `<split>/`; each mixture gives
one example per speaker. Training follows Lin et al. 2023: negative SI-SNR, Adam 1.5e-4, gradient-norm clip 5,
the learning rate halved after 3 epochs without validation improvement, 4 s crops. Options
(`--task-arg NAME=VALUE`):

- `crop_seconds` (4.0): training crop length in seconds, cut at video-frame boundaries (0: whole mixtures);
- `normalize` (true): divide mixture and target by the mixture's peak, as the published loader does.

Evaluation runs each example whole and unpadded (SI-SNRi/SNRi at 16 kHz).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from tse_cli.train.losses import neg_si_snr_loss
from tse_cli.train.metrics import separation_metrics
from tse_cli.train.tasks import EpochSet, Task, check_splits, concat_metrics, pad_collate
from tse_cli.visual import align_frames, clue_frames


class AVSet(EpochSet):
    """A `MuseSet` whose random crops are drawn from `example_rng(seed, epoch, index)`."""

    def __init__(self, root: Path, split: str, options: dict[str, Any], train: bool, seed: int) -> None:
        from tse_cli.data.muse import MuseSet

        crop = float(options["crop_seconds"]) if train else 0.0
        super().__init__(MuseSet(root, split, crop, bool(options["normalize"]), rng=self.rng, validate=False), seed)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.set[index]


def _valid(batch: dict[str, Any], i: int) -> tuple[Tensor, Tensor, Tensor]:
    """Example i of a batch without padding: mixture, target (1, 1, n) and its clue (1, frames, 512)."""
    n = int(batch["length"][i])
    clue = batch["clue"][i, : clue_frames(n, int(batch["sample_rate"][i]))]
    return batch["mixture"][i : i + 1, :, :n], batch["target"][i : i + 1, :, :n], clue[None]


class AVTask(Task):
    """AV-SepFormer / AV-SepMamba (see the module docstring)."""

    family = "av-sepformer/av-sepmamba"
    hyper: dict[str, Any] = {
        "optimizer": "adam",
        "lr": 1.5e-4,
        "grad_clip": 5.0,
        "batch_size": 4,
        "scheduler": "plateau",
        "fixed_epochs": 0,
        "plateau_factor": 0.5,
        "plateau_patience": 3,
        "plateau_threshold": 0.0,
        "min_lr": 1e-6,
    }
    options = {"crop_seconds": 4.0, "normalize": True}

    def validate(self, root: Path, splits: tuple[str, ...]) -> None:
        from tse_cli.data.muse import MuseError, validate_split

        check_splits(root, splits, validate_split, (MuseError,))

    def dataset(self, root: Path, split: str, options: dict[str, Any], train: bool, seed: int = 0) -> Dataset:
        return AVSet(root, split, options, train, seed)

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Pad audio with zeros and clues by repeating their last frame, to the longest example."""
        frames = max(item["clue"].shape[0] for item in items)
        items = [{**item, "clue": torch.from_numpy(align_frames(item["clue"].numpy(), frames))} for item in items]
        return pad_collate(items)

    def loss(self, model: nn.Module, batch: dict[str, Any], options: dict[str, Any]) -> Tensor:
        estimate = model(batch["mixture"], batch["clue"]).float()
        samples = torch.arange(estimate.shape[-1], device=estimate.device)
        valid = (samples[None, :] < batch["length"][:, None]).to(estimate.dtype)[:, None]
        return neg_si_snr_loss(estimate * valid, batch["target"])

    def evaluate(self, model: nn.Module, batch: dict[str, Any], options: dict[str, Any]) -> dict[str, Tensor]:
        parts = []
        for i in range(batch["mixture"].shape[0]):
            mixture, target, clue = _valid(batch, i)
            parts.append(separation_metrics(model(mixture, clue).float(), mixture, target))
        return concat_metrics(parts)


def task(arch: str) -> Task:
    """The task of `av-sepformer-*` and `av-sepmamba-*` architectures."""
    return AVTask()
