"""`tse extract` with an AV checkpoint and lip embeddings: one window, overlap-added windows, folder pairing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from tse_cli.checkpoint import load_checkpoint, save_checkpoint
from tse_cli.cli import app
from tse_cli.models import create

RATE = 16000
TINY = {"d_model": 16, "n_heads": 2, "d_ffn": 32, "intra_layers": 1, "inter_layers": 2}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(create("av-sepformer-small", **TINY), tmp_path_factory.mktemp("av") / "ckpt")


def write_pair(folder: Path, stem: str, seconds: float, fps: float = 25.0, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    wav, npy = folder / f"{stem}.wav", folder / f"{stem}.npy"
    sf.write(wav, (0.1 * rng.standard_normal(round(seconds * RATE))).astype(np.float32), RATE, subtype="FLOAT")
    np.save(npy, rng.standard_normal((round(seconds * fps), 512)).astype(np.float32))
    return wav, npy


def forward(checkpoint: Path, audio: np.ndarray, clue: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        model = load_checkpoint(checkpoint)
        return model(torch.from_numpy(audio)[None, None], torch.from_numpy(clue)[None])[0, 0].numpy()


def test_short_file_is_one_forward(tmp_path, checkpoint):
    wav, npy = write_pair(tmp_path, "mix", 1.52)  # a whole number of video frames (38)
    out = tmp_path / "out.wav"
    run = CliRunner().invoke(
        app, ["extract", "--checkpoint", str(checkpoint), str(wav), "--visual", str(npy), "-o", str(out)]
    )
    assert run.exit_code == 0, run.output
    estimate, rate = sf.read(out, dtype="float32")
    assert rate == RATE and sf.info(out).subtype == "FLOAT"
    expected = forward(checkpoint, sf.read(wav, dtype="float32")[0], np.load(npy))
    assert np.abs(estimate - expected).max() < 1e-5


def test_long_file_overlap_adds_windows_with_their_clue_frames(tmp_path, checkpoint):
    wav, npy = write_pair(tmp_path, "mix", 6.0)
    out = tmp_path / "out.wav"
    run = CliRunner().invoke(
        app, ["extract", "--checkpoint", str(checkpoint), str(wav), "--visual", str(npy), "-o", str(out)]
    )
    assert run.exit_code == 0, run.output
    estimate = sf.read(out, dtype="float32")[0]
    audio, clue = sf.read(wav, dtype="float32")[0], np.load(npy)
    assert estimate.shape == audio.shape and np.isfinite(estimate).all()
    # the first window is 4 s (100 frames); its first 3 s are written before any crossfade
    first = forward(checkpoint, audio[: 4 * RATE], clue[:100])
    assert np.abs(estimate[: 3 * RATE] - first[: 3 * RATE]).max() < 1e-5


def test_folder_pairs_stems_and_reports_bad_clues(tmp_path, checkpoint):
    inputs = tmp_path / "in"
    write_pair(inputs, "good", 1.0)
    write_pair(inputs, "wrong_rate", 2.0, fps=30.0, seed=1)
    sf.write(inputs / "no_clue.wav", np.zeros(RATE, np.float32), RATE)
    out = tmp_path / "out"
    run = CliRunner().invoke(app, ["extract", "--checkpoint", str(checkpoint), str(inputs), "-O", str(out)])
    assert run.exit_code == 1, run.output
    written = sorted(p.name for p in out.rglob("*.wav"))
    assert len(written) == 1 and written[0].startswith("good"), written
    assert "wrong_rate.npy: 60 frames for 2.00 s of audio" in run.output
    assert "no_clue.npy: no such file" in run.output
