"""Shared test fixtures: the `../shared` material (skipped with a reason where a clone lacks it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Without CUDA the Triton scan kernels run in Triton's CPU interpreter (read when the kernels are defined, at their
# module's first import), so their parity tests run on every machine; with CUDA they compile for the GPU.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

# Tiny test models run fastest on one intra-op thread; more threads only add synchronisation on 2-core CI.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared() -> Path:
    """The shared reference material beside the project (fixtures, audio, reference docs)."""
    if not (SHARED / "fixtures").is_dir():
        pytest.skip(f"shared material not found at {SHARED} (CI always has it; a bare clone may not)")
    return SHARED


@pytest.fixture(scope="session")
def fixtures(shared: Path) -> Path:
    """`../shared/fixtures`: outputs of the authors' implementations on fixed inputs."""
    return shared / "fixtures"
