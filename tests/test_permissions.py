"""Files and folders tse writes follow the umask like any other tool's: under umask 022, 0644 files and 0755
folders (never the owner-only 0600/0700 of mkstemp, mkdtemp or safetensors), so a container that downloads as
root and runs as another user can read them. Checked through the real CLI for convert, train, mix and extract,
and for Hub and URL downloads with the registry conversion they feed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import hub_server
import numpy as np
import pytest
import soundfile as sf
from hub_server import FakeHub
from test_convert import serve_published
from test_train import write_scene_set
from tiny import TINY
from typer.testing import CliRunner

from tse_cli import atomic, hub, weights
from tse_cli.cli import app

fake_hub, hub_env = hub_server.fake_hub, hub_server.hub_env  # fixtures
runner = CliRunner()


@pytest.fixture(autouse=True)
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def modes(root: Path) -> dict[str, str]:
    """Relative path -> octal permission bits of `root` and everything below it (symlinks: their targets)."""
    found = {".": oct(stat.S_IMODE(root.stat().st_mode))}
    for path in sorted(root.rglob("*")):
        found[str(path.relative_to(root))] = oct(stat.S_IMODE(path.stat().st_mode))
    return found


def assert_ordinary(root: Path) -> None:
    """Folders 0o755 and files 0o644 (umask 022) under `root`."""
    wrong = {
        name: mode for name, mode in modes(root).items() if mode != ("0o755" if (root / name).is_dir() else "0o644")
    }
    assert not wrong, wrong


def test_umask_is_read_without_changing_it():
    assert atomic.umask() == 0o022
    os.umask(0o027)
    assert atomic.umask() == 0o027 and os.umask(0o022) == 0o027


def test_convert_writes_readable_checkpoints(fixtures: Path, tmp_path: Path):
    official = fixtures / "waveformer_official_tiny"
    args = ["convert", "waveformer", str(official / "checkpoint.pt"), "--config", str(official / "config.json")]
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "wf")])
    assert result.exit_code == 0, result.output
    assert_ordinary(tmp_path / "wf")


def test_train_run_folders_are_readable(tmp_path: Path):
    data = write_scene_set(tmp_path / "set", {"train": 2, "val": 1})
    model = [x for name, value in TINY["waveformer-small"].items() for x in ("-a", f"{name}={value}")]
    args = ["train", "waveformer-small", "--data", str(data), "-o", str(tmp_path / "run"), "-q", "--max-steps", "1"]
    result = runner.invoke(app, [*args, "--batch-size", "2", "--num-workers", "0", *model])
    assert result.exit_code == 0, result.output
    assert {"last/model.safetensors", "last/training_state.safetensors", "best/model.safetensors"} <= set(
        modes(tmp_path / "run")
    )
    assert_ordinary(tmp_path / "run")


def test_mix_and_extract_outputs_are_readable(tmp_path: Path):
    small = ["--clips-per-class", "2", "--test-clips-per-class", "2", "--backgrounds", "1", "--eval-backgrounds", "1"]
    corpus = tmp_path / "corpus"
    assert (
        runner.invoke(app, ["mix", "--synthetic", "-o", str(corpus), *small, "--background-seconds", "6.5"]).exit_code
        == 0
    )
    mixes = tmp_path / "mixes"
    built = runner.invoke(
        app,
        ["mix", "--fsd", str(corpus / "fsd"), "--tau", str(corpus / "tau"), "-o", str(mixes), "--split", "val",
         "--count", "1", "--jobs", "1"],
    )  # fmt: skip
    assert built.exit_code == 0, built.output
    assert_ordinary(corpus)
    assert_ordinary(mixes)
    audio = tmp_path / "in" / "a.wav"
    audio.parent.mkdir()
    sf.write(audio, (0.1 * np.random.default_rng(0).standard_normal(4410)).astype(np.float32), 44100)
    extracted = runner.invoke(
        app, ["extract", str(audio.parent), "-c", "Bark", "-m", "demo", "-O", str(tmp_path / "out"), "-q"]
    )
    assert extracted.exit_code == 0, extracted.output
    assert_ordinary(tmp_path / "out")


def test_downloads_and_converted_cache_entries_are_readable(
    fixtures: Path, hub_env, fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    registry = serve_published(fixtures / "waveformer_official_tiny", fake_hub, tmp_path / "reg.toml")
    monkeypatch.setenv("TSE_REGISTRY", str(registry))
    folder = weights.resolve("tiny-waveformer")
    assert_ordinary(folder)
    assert_ordinary(hub.tse_cache() / "urls")
    blobs = list((Path(hub_env["HF_HOME"]) / "hub").rglob("blobs/*"))
    assert blobs and all(oct(stat.S_IMODE(b.stat().st_mode)) == "0o644" for b in blobs)
