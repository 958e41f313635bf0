"""`tse demo` and the embedded demo model: offline, fast, a positive SI-SNRi; the files it writes."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import soundfile as sf
from test_metrics import np_si_snr, read_png

ROOT = Path(__file__).resolve().parents[1]
ASSET = ROOT / "tse_cli" / "assets" / "demo"


def test_demo_runs_offline_and_improves_the_target(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "2"}
    out = tmp_path / "demo_out"
    command = [sys.executable, "-m", "tse_cli", "demo", "-o", str(out), "--seed", "11"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    printed = float(re.search(r"SI-SNRi (-?[\d.]+) dB", result.stdout).group(1))
    assert printed > 0
    mixture, rate = sf.read(out / "mixture.wav")
    reference, _ = sf.read(out / "reference.wav")
    estimate, _ = sf.read(out / "estimate.wav")
    assert rate == 44100 and mixture.shape == reference.shape == estimate.shape == (6 * 44100,)
    independent = np_si_snr(estimate, reference) - np_si_snr(mixture, reference)
    assert abs(independent - printed) < 0.01
    picture = read_png(out / "spectrograms.png")
    assert picture.shape[0] > 3 * 256 and picture.std() > 10  # three panels with content
    names = ["demo.json", "estimate.wav", "mixture.wav", "reference.wav", "spectrograms.png"]
    assert sorted(p.name for p in out.iterdir()) == names


def test_the_default_scene_is_the_same_on_every_run_and_shows_the_cards_mean(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tse_cli.cli import app

    out = tmp_path / "demo_out"
    first = CliRunner().invoke(app, ["demo", "-o", str(out)])
    assert first.exit_code == 0, first.output
    estimate = sf.read(out / "estimate.wav")[0]
    again = CliRunner().invoke(app, ["demo", "-o", str(out)])  # a previous demo's folder: replaced, and said so
    assert again.exit_code == 0 and f"replaced the previous demo in {out}" in again.stderr
    assert again.stdout == first.stdout and np.array_equal(sf.read(out / "estimate.wav")[0], estimate)
    assert "scene (seed 9): Gong" in first.stdout
    card = re.search(r"held-out result \(model card\): SI-SNRi ([\d.]+) dB mean", first.stdout)
    assert card and float(card.group(1)) == 6.16, first.stdout  # as tse_cli/assets/demo/MODEL_CARD.md says
    record = json.loads((out / "demo.json").read_text())
    assert record["seed"] == 9 and record["target"] == "Gong" and record["model"] == "demo"
    assert f"SI-SNRi {record['si_snri']:.2f} dB" in first.stdout


def test_a_folder_with_other_files_is_refused_unless_overwrite(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tse_cli.cli import app

    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    refused = CliRunner().invoke(app, ["demo", "-o", str(out)])
    assert refused.exit_code == 2 and "holds files tse demo did not write (notes.txt)" in refused.output
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    (out / "mixture.wav").write_bytes(b"my own recording")  # a demo's file name, but no demo wrote it
    assert CliRunner().invoke(app, ["demo", "-o", str(out)]).exit_code == 2
    assert (out / "mixture.wav").read_bytes() == b"my own recording"
    forced = CliRunner().invoke(app, ["demo", "-o", str(out), "--seed", "4", "--overwrite"])
    assert forced.exit_code == 0 and (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "demo.json").read_text())["seed"] == 4 and sf.info(out / "mixture.wav").frames > 0


def test_card_result_reads_the_held_out_row(tmp_path: Path) -> None:
    from tse_cli.train.demo import card_result

    assert card_result(ASSET) == "SI-SNRi 6.16 dB mean (5.44 dB median), SNRi 8.27 dB on 64 test scenes"
    assert card_result(tmp_path) is None and card_result(None) is None


def test_demo_scenes_are_reproducible_and_fresh() -> None:
    from tse_cli.train.demo import make_scene

    first, again, other = make_scene(3), make_scene(3), make_scene(4)
    assert np.array_equal(first[0], again[0]) and first[2:] == again[2:]
    assert not np.array_equal(first[0], other[0])
    mixture, reference, target, others = make_scene(5, target="Cough")
    assert target == "Cough" and len(others) == 2 and "Cough" not in others
    assert np.abs(mixture).max() <= 0.99 and np.abs(reference).max() > 0


def test_the_embedded_model_is_small_pinned_and_documented() -> None:
    files = {path.name: path for path in ASSET.iterdir()}
    assert {"config.json", "model.safetensors", "MODEL_CARD.md"} <= set(files)
    assert sum(path.stat().st_size for path in files.values()) <= 5 * 1024 * 1024
    entry = tomllib.loads((ROOT / "tse_cli" / "weights.toml").read_text())["demo"]
    for role, name in (("config", "config.json"), ("weights", "model.safetensors")):
        assert entry["files"][role]["sha256"] == hashlib.sha256(files[name].read_bytes()).hexdigest()
    card = files["MODEL_CARD.md"].read_text()
    assert "tse train wavemamba-small" in card and "tse mix --synthetic" in card and "tse eval" in card
