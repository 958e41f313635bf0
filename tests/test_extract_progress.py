"""`tse extract` through the real CLI: its progress in a log (stderr not a terminal) and the `--out` alias."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

TSE = [sys.executable, "-m", "tse_cli"]


def _inputs(folder: Path, count: int = 2, seconds: float = 1.0) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        sf.write(folder / f"a{i}.wav", (rng.standard_normal(int(44100 * seconds)) * 0.1).astype("float32"), 44100)
    return folder


def test_a_log_gets_periodic_progress_lines_with_throughput_and_eta(tmp_path: Path):
    inputs = _inputs(tmp_path / "in")
    env = {**os.environ, "TSE_PROGRESS_INTERVAL": "0"}
    args = [*TSE, "extract", str(inputs), "-m", "demo", "-c", "Cough", "-O", str(tmp_path / "out")]
    done = subprocess.run(args, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    progress = [line for line in done.stderr.splitlines() if line.startswith("extract: ")]
    assert any("x real time" in line and "eta" in line for line in progress[:-1]), done.stderr
    assert progress[-1].startswith("extract: 2 s audio in ") and progress[-1].endswith("2/2 files"), done.stderr
    assert "\x1b" not in done.stderr, "a log gets plain lines, no terminal control codes"


def test_out_is_a_hidden_alias_of_output(tmp_path: Path):
    inputs = _inputs(tmp_path / "in", count=1)
    source = str(inputs / "a0.wav")
    for flag, name in (("-o", "short.wav"), ("--out", "alias.wav")):
        done = subprocess.run([*TSE, "extract", source, "-m", "demo", "-c", "Cough", flag, str(tmp_path / name)])
        assert done.returncode == 0
    assert (tmp_path / "short.wav").read_bytes() == (tmp_path / "alias.wav").read_bytes()
    shown = subprocess.run(
        [*TSE, "extract", "--help"], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}
    )
    assert "--output" in shown.stdout and "--out " not in shown.stdout
