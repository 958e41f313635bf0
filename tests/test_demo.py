"""`tse demo` and the embedded demo model: offline, fast, a positive SI-SNRi; the files it writes."""

from __future__ import annotations

import hashlib
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
    assert sorted(p.name for p in out.iterdir()) == ["estimate.wav", "mixture.wav", "reference.wav", "spectrograms.png"]


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
