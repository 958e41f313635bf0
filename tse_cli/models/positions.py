"""Sinusoidal positional tables, shared by Waveformer's decoder and the AV models' sequence models."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tse_cli.models.budget import placed


def sinusoids(positions: Tensor, inv_freq: Tensor) -> Tensor:
    """Interleaved sin/cos table: (P,) positions x (F,) frequencies -> (P, 2F), [sin f0, cos f0, sin f1, ...]."""
    angles = positions[:, None] * inv_freq[None, :]
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)


def sinusoid_table(length: int, dim: int) -> Tensor:
    """The Transformer's 1-D table (length, dim): channels 2i and 2i + 1 of position p are sin and cos of
    p 10000^(-2i / dim). Computed on the CPU, then `placed` (the meta device while `budget.meta_model` builds)."""
    cpu = {"device": "cpu", "dtype": torch.float32}
    inv_freq = torch.exp(torch.arange(0, dim, 2, **cpu) * (-math.log(10000.0) / dim))
    return placed(sinusoids(torch.arange(length, **cpu), inv_freq)[:, :dim])
