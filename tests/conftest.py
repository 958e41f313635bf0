"""Shared test fixtures: the `../shared` material (skipped with a reason where a clone lacks it) and tiny
checkpoint directories of every architecture (`tiny_checkpoint`; the configs are in tiny.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """`tiny_checkpoint(name, seed=0, **overrides)`: a checkpoint directory (config.json + model.safetensors) of
    architecture `name` at its tiny config (`tiny.tiny`), weights drawn with `torch.manual_seed(seed)`.

    Written once per session for each set of arguments and shared: tests read it and never change it (a test
    that breaks a checkpoint writes its own with `save_checkpoint`). The global RNG is left as it was.
    """
    from tiny import tiny

    from tse_cli.checkpoint import save_checkpoint

    written: dict[str, Path] = {}

    def make(name: str, seed: int = 0, **overrides: Any) -> Path:
        key = json.dumps([name, seed, overrides], sort_keys=True)
        if key not in written:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = tiny(name, **overrides)
            written[key] = save_checkpoint(model, tmp_path_factory.mktemp("tiny-checkpoint") / name)
        return written[key]

    return make


@pytest.fixture
def full_disk(tmp_path: Path):
    """A 64 KiB tmpfs (root on Linux only), for the "No space left on device" paths."""
    mount = tmp_path / "full"
    mount.mkdir()
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root on Linux")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


# `tse extract` tests (test_extract_cli.py, test_extract_io.py) ----------------------------------------------------


@pytest.fixture
def tiny(tiny_checkpoint: Callable[..., Path]) -> Path:
    """A tiny Waveformer checkpoint directory (random weights)."""
    return tiny_checkpoint("waveformer-large")


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch):
    """Replace the registry with a stand-in model; returns the list of specs asked for."""
    asked: list[str] = []

    def use(model: torch.nn.Module) -> list[str]:
        def load_model(spec: str, device: str = "cpu", registry: dict | None = None) -> torch.nn.Module:
            asked.append(spec)
            return model

        monkeypatch.setattr("tse_cli.weights.load_model", load_model)
        return asked

    return use
