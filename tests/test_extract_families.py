"""`tse extract` end to end for the families with their own options, through tiny saved checkpoints: the diffusion
model (DPM-TSE: one class, --steps/--eta/--seed) and the audio-visual window models (AV-SepFormer, AV-SepMamba:
--visual, clue frames at the end of a file, batches, folders pairing each recording with its clue). How the engine
runs every architecture (streams, windows) is in test_contract.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from tse_cli.checkpoint import load_checkpoint
from tse_cli.cli import app


@pytest.fixture(scope="module")
def checkpoints(tiny_checkpoint) -> dict[str, Path]:
    """A tiny checkpoint directory (random weights) per family."""
    return {name: tiny_checkpoint(name) for name in ("dpm-tse", "av-sepformer-small", "av-sepmamba-small")}


def run(*args: str | Path):
    """Invoke `tse` in-process (an escaping exception fails the test: no tracebacks for users)."""
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def write(path: Path, seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    x = (0.1 * np.random.default_rng(seed).standard_normal(round(seconds * rate))).astype(np.float32)
    sf.write(str(path), x, rate, subtype="FLOAT")
    return x


def forward(checkpoint: Path, audio: np.ndarray, clue: np.ndarray) -> np.ndarray:
    """The model's own offline forward on one whole mono signal with its whole clue."""
    with torch.no_grad():
        model = load_checkpoint(checkpoint)
        return model(torch.from_numpy(audio)[None, None], torch.from_numpy(clue)[None])[0, 0].numpy()


# diffusion -----------------------------------------------------------------------------------------------------


def test_single_class_model_refuses_unions_before_any_audio(tmp_path: Path, checkpoints: dict[str, Path]) -> None:
    not_read = tmp_path / "missing.wav"  # reading it would fail that file (exit 1), not the usage (exit 2)
    args = ("--checkpoint", checkpoints["dpm-tse"], "-c", "Cough", "-c", "Bark", "-o", tmp_path / "o.wav")
    result = run("extract", not_read, *args)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: model {str(checkpoints['dpm-tse'])!r} extracts at most 1 class(es) at a time, got 2 (Bark, Cough); "
        "run it once per class"
    ]
    assert not (tmp_path / "o.wav").exists()


def test_registry_single_class_model_refuses_unions_before_download(tmp_path: Path, monkeypatch) -> None:
    def load_model(spec: str, device: str = "cpu", registry: dict | None = None):
        raise AssertionError(f"{spec} was loaded (downloaded) before the usage error")

    monkeypatch.setattr("tse_cli.weights.load_model", load_model)
    result = run(
        "extract", tmp_path / "mix.wav", "--model", "dpm-tse", "-c", "Cough", "-c", "Bark", "-o", tmp_path / "o"
    )
    assert result.exit_code == 2 and "'dpm-tse' extracts at most 1 class(es)" in result.stderr


def test_diffusion_is_reproducible_per_seed(tmp_path: Path, checkpoints: dict[str, Path]) -> None:
    write(tmp_path / "a.wav", 0.5, 16000)  # two 0.32 s windows
    write(tmp_path / "b.wav", 0.5, 22050, seed=1)  # resampled to 16 kHz and back
    common = ("-c", "Cough", "--checkpoint", checkpoints["dpm-tse"], "--steps", "2", "--eta", "1", "--json")
    outputs = {}
    for name, inputs, seed in (("one", ["b.wav"], 7), ("two", ["a.wav", "b.wav"], 7), ("other", ["b.wav"], 8)):
        result = run("extract", *(tmp_path / i for i in inputs), *common, "--seed", seed, "-O", tmp_path / name)
        assert result.exit_code == 0, result.stderr
        outputs[name] = sf.read(str(tmp_path / name / "b_Cough.wav"), dtype="float32")
    (one, rate), (two, _), (other, _) = outputs.values()
    assert rate == 22050 and one.shape == (round(0.5 * 22050),) and np.abs(one).max() > 0
    np.testing.assert_array_equal(one, two)  # the same seed gives a file the same result, whatever ran before it
    assert np.abs(one - other).max() > 1e-4


def test_model_value_errors_fail_the_file_in_one_line(
    tmp_path: Path, checkpoints: dict[str, Path], monkeypatch
) -> None:
    from tse_cli.models.dpmtse import DPMTSE

    def refuse(self, mixture, clue, **options):
        raise ValueError("cannot extract this\nsecond line")

    monkeypatch.setattr(DPMTSE, "forward", refuse)
    write(tmp_path / "a.wav", 0.1, 16000)
    result = run(
        "extract", tmp_path / "a.wav", "-c", "Cough", "--checkpoint", checkpoints["dpm-tse"], "-O", tmp_path / "o"
    )
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {tmp_path / 'a.wav'}: extraction failed (ValueError: cannot extract this)"]
    assert "Traceback" not in result.stderr and not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


# audio-visual models -------------------------------------------------------------------------------------------


def write_pair(folder: Path, stem: str, seconds: float, frames: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    audio = write(folder / f"{stem}.wav", seconds, 16000, seed)
    clue = np.random.default_rng(seed + 100).standard_normal((frames, 512)).astype(np.float32)
    np.save(folder / f"{stem}.npy", clue)
    return audio, clue


@pytest.mark.parametrize("name", ["av-sepformer-small", "av-sepmamba-small"])
def test_clue_at_the_end_of_a_file_is_its_own(tmp_path: Path, checkpoints: dict[str, Path], name: str) -> None:
    audio, clue = write_pair(tmp_path, "mix", 1.5, 38)  # the 38th frame covers the last 20 ms
    out = tmp_path / "out.wav"
    result = run(
        "extract", "--checkpoint", checkpoints[name], tmp_path / "mix.wav", "--visual", tmp_path / "mix.npy", "-o", out
    )
    assert result.exit_code == 0, result.stderr
    estimate = sf.read(str(out), dtype="float32")[0]
    assert np.abs(estimate - forward(checkpoints[name], audio, clue)).max() < 1e-5


def test_visual_batches_equal_files_alone(tmp_path: Path, checkpoints: dict[str, Path]) -> None:
    checkpoint = checkpoints["av-sepformer-small"]
    src = tmp_path / "in"
    src.mkdir()
    pairs = {
        "a": write_pair(src, "a", 1.5, 38),
        "b": write_pair(src, "b", 1.0, 25, seed=1),
        "c": write_pair(src, "c", 1.5, 37, seed=2),  # one frame short: the model aligns it
        "d": write_pair(src, "d", 1.5, 38, seed=3),
    }
    result = run("extract", "--checkpoint", checkpoint, src, "-O", tmp_path / "out", "--batch-size", "4")
    assert result.exit_code == 0, result.stderr
    for stem, (audio, clue) in pairs.items():
        estimate = sf.read(str(tmp_path / "out" / f"{stem}_visual.wav"), dtype="float32")[0]
        assert np.abs(estimate - forward(checkpoint, audio, clue)).max() < 1e-5, stem


def test_folder_pairs_stems_and_reports_bad_clues(tmp_path: Path, checkpoints: dict[str, Path]) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_pair(inputs, "good", 1.0, 25)
    write_pair(inputs, "wrong_rate", 2.0, 60, seed=1)  # 30 fps
    sf.write(inputs / "no_clue.wav", np.zeros(16000, np.float32), 16000)
    out = tmp_path / "out"
    result = run("extract", "--checkpoint", checkpoints["av-sepformer-small"], inputs, "-O", out)
    assert result.exit_code == 1, result.output
    written = sorted(p.name for p in out.rglob("*.wav"))
    assert len(written) == 1 and written[0].startswith("good"), written
    assert "wrong_rate.npy: 60 frames for 2.00 s of audio" in result.output
    assert "no_clue.npy: no such file" in result.output
