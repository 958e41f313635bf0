"""`tse train dpm-tse`: event-overlapping crops, velocity loss through the common loop, frozen vocoder, eval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file
from tiny import TINY, tiny

from tse_cli.checkpoint import load_checkpoint
from tse_cli.data import layout
from tse_cli.train.config import build_config
from tse_cli.train.loop import train
from tse_cli.train.task_dpmtse import DpmTask, event_crop_start
from tse_cli.train.tasks import DataError

RATE = 16000
LABELS = (2, 10, 18)  # Bark, Cough, Flute


def write_dpm_set(root: Path, counts: dict[str, int], seconds: float = 0.6, rate: int = RATE) -> Path:
    """A dpm-tse-recipe set (the layout `tse mix --recipe dpm-tse` writes) of tone bursts in noise."""
    rng = np.random.default_rng(0)
    n = round(seconds * rate)
    t = np.arange(n) / rate
    root.mkdir(parents=True)
    layout.update_info(root, "dpm-tse", rate)
    rows = []
    for split, count in counts.items():
        (root / split).mkdir()
        for i in range(1, count + 1):
            cls = LABELS[i % len(LABELS)]
            onset = rng.uniform(0, seconds / 2)
            burst = ((t >= onset) & (t < onset + seconds / 3)) * 0.3 * np.sin(2 * np.pi * 200 * (1 + cls % 7) * t)
            files = layout.dpm_audio(root, split, layout.dpm_name(split, i - 1))
            for key, audio in (
                ("mixture", burst + 0.05 * rng.standard_normal(n)),
                ("target", burst),
                ("reference", burst),
            ):
                sf.write(files[key], audio.astype(np.float32), rate, subtype="FLOAT")
            rows.append([split, split, files["mixture"].name, cls, onset, onset + seconds / 3])
    layout.write_meta(root, rows)
    return root


@pytest.fixture(scope="module")
def dpm_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dpm_set(tmp_path_factory.mktemp("data") / "set", {"train": 6, "val": 2})


@pytest.fixture(scope="module")
def first_stage(fixtures: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vocoder") / "first_stage.pt"
    torch.save(load_file(fixtures / "hifigan16k_official_tiny" / "state_dict.safetensors"), path)
    return path


def test_crops_overlap_the_event() -> None:
    rng = np.random.default_rng(0)
    starts = [event_crop_start(10_000, 1_000, 6_000, 6_500, rng) for _ in range(300)]
    assert all(5_001 <= s <= 6_499 for s in starts) and len(set(starts)) > 100
    assert event_crop_start(10_000, 1_000, 20_000, 21_000, rng) <= 9_000  # event outside: any crop
    assert event_crop_start(800, 1_000, 0, 800, rng) == 0


def test_training_fits_the_unet_keeps_the_vocoder_and_evaluates(
    dpm_set: Path, first_stage: Path, tmp_path: Path
) -> None:
    config = build_config(
        DpmTask.hyper,
        {
            "arch": "dpm-tse",
            "data": str(dpm_set),
            "out": str(tmp_path / "run"),
            "model_args": TINY["dpm-tse"],
            "task": {"crop_seconds": 0.32, "vocoder": str(first_stage), "eval_steps": 2},
            "batch_size": 2,
            "num_workers": 0,
            "lr": 1e-3,
            "log_every": 1,
            "epochs": 4,
        },
    )
    result = train(config)
    assert result["step"] == 12
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [line["loss"] for line in lines if line["event"] == "train"]
    assert np.mean(losses[-4:]) < np.mean(losses[:4])
    assert all(np.isfinite(line["si_snri"]) for line in lines if line["event"] == "val")

    trained = load_checkpoint(tmp_path / "run" / "last")
    vocoder = torch.load(first_stage, weights_only=True)
    for key, value in trained.vocoder.state_dict().items():
        assert torch.equal(value, vocoder[f"vocoder.{key}"]), key


def test_loss_is_the_velocity_mse_of_random_timesteps(dpm_set: Path) -> None:
    task = DpmTask()
    options = {**task.options, "crop_seconds": 0.32}
    batch = task.collate([task.dataset(dpm_set, "train", options, train=True)[i] for i in range(2)])
    assert batch["mixture"].shape == (2, 1, round(0.32 * RATE))
    model = tiny("dpm-tse")
    loss = task.loss(model, batch, options)
    loss.backward()
    assert loss.ndim == 0 and 0.1 < loss.item() < 10
    assert all(p.grad is None for p in model.vocoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.unet.parameters())


@pytest.mark.parametrize(
    ("recipe", "rate", "message"), [("waveformer", 16000, "no rendered scenes"), ("dpm-tse", 44100, "44100 Hz")]
)
def test_rejects_sets_it_cannot_train_on(tmp_path: Path, recipe: str, rate: int, message: str) -> None:
    root = write_dpm_set(tmp_path / "set", {"train": 1}, seconds=0.1, rate=rate)
    (root / "recipe.json").write_text(json.dumps({"recipe": recipe, "sample_rate": rate}))
    with pytest.raises(DataError, match=message):
        DpmTask().validate(root, ("train",))


def test_validate_rejects_sets_at_another_rate(tmp_path: Path) -> None:
    """DPM-TSE trains on 16 kHz dpm-tse sets only: a dpm-tse set written at 44.1 kHz is refused by name."""
    root = write_dpm_set(tmp_path / "set", {"train": 1}, seconds=0.1, rate=44100)
    with pytest.raises(DataError, match=r"a dpm-tse set at 44100 Hz; DPM-TSE trains on `tse mix --recipe dpm-tse`"):
        DpmTask().validate(root, ("train",))
    with pytest.raises(DataError, match="data folder not found"):
        DpmTask().validate(tmp_path / "nothing", ("train",))
