"""Evaluation of a model on a data split: per-example SI-SNRi/SNRi records, for validation and `tse eval`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from tse_cli.train.tasks import Task


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Move the tensors of a batch to `device`."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    task: Task,
    loader: DataLoader,
    options: dict[str, Any],
    device: torch.device,
    on_batch: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Per-example records (`label`, `si_snr`, `si_snri`, `snr`, `snri`) of `model` over a loader, in float32."""
    model.eval()
    records: list[dict[str, Any]] = []
    for batch in loader:
        batch = to_device(batch, device)
        metrics = task.evaluate(model, batch, options)
        for i, label in enumerate(batch["label"]):
            records.append({"label": label, **{k: v[i].item() for k, v in metrics.items()}})
        if on_batch is not None:
            on_batch(len(batch["label"]))
    return records


def first(dataset: Dataset, limit: int) -> Dataset:
    """The first `limit` examples of `dataset` (0: all of them)."""
    return Subset(dataset, range(min(limit, len(dataset)))) if limit else dataset


def split_loader(
    task: Task,
    root: Path,
    split: str,
    options: dict[str, Any],
    batch_size: int = 1,
    num_workers: int = 0,
    limit: int = 0,
) -> DataLoader:
    """An in-order loader over the first `limit` examples (0: all) of a split, as the task evaluates them."""
    dataset = first(task.dataset(root, split, options, train=False), limit)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=task.collate, num_workers=num_workers)
