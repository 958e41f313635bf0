"""`tse eval`: its numbers equal SI-SNRi/SNRi computed independently (numpy) from the model's own outputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
from test_metrics import np_si_snr, np_snr
from test_train import write_scene_set
from typer.testing import CliRunner

from tse_cli.classes import FSD_CLASSES, class_index
from tse_cli.cli import app
from tse_cli.data import layout


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint) -> Path:
    return tiny_checkpoint("wavemamba-small")


def write_dpm_set(root: Path, count: int = 3, rate: int = 16000, seconds: float = 0.5) -> Path:
    """A dpm-tse-recipe set (meta.csv, <split>_<n>{,_lab,_re}.wav) of tones of different lengths at 16 kHz."""
    rng = np.random.default_rng(5)
    (root / "test").mkdir(parents=True)
    rows = []
    for n in range(1, count + 1):
        t = np.arange(round(seconds * rate * (1 + 0.2 * n))) / rate  # lengths differ: batches are padded
        target = 0.3 * np.sin(2 * np.pi * 500 * n * t)
        mixture = target + 0.2 * rng.standard_normal(t.size)
        files = layout.dpm_audio(root, "test", layout.dpm_name("test", n - 1))
        for key, audio in (("mixture", mixture), ("target", target), ("reference", target)):
            sf.write(files[key], audio.astype(np.float32), rate, subtype="FLOAT")
        rows.append(["test", "test", files["mixture"].name, float(class_index("Cough")), 0.0, seconds])
    layout.write_meta(root, rows)
    layout.update_info(root, "dpm-tse", rate)
    return root


def expected(model_dir: Path, mixture: np.ndarray, target: np.ndarray, labels: list[str], rate: int) -> dict:
    """SI-SNRi and SNRi by the numpy formulas, from the model's own estimate of `mixture` at `rate`."""
    from tse_cli.checkpoint import load_checkpoint

    model = load_checkpoint(model_dir)
    query = torch.zeros(1, len(FSD_CLASSES))
    query[0, [class_index(label) for label in labels]] = 1
    x = torch.from_numpy(mixture.astype(np.float32))[None, None]
    with torch.no_grad():
        estimate = model(torchaudio.functional.resample(x, rate, 44100), query) if rate != 44100 else model(x, query)
    if rate != 44100:
        estimate = torchaudio.functional.resample(estimate, 44100, rate)
    est = estimate[0, 0, : mixture.size].double().numpy()
    return {
        "si_snri": np_si_snr(est, target) - np_si_snr(mixture, target),
        "snri": np_snr(est, target) - np_snr(mixture, target),
    }


def test_eval_matches_independent_metrics_on_a_scene_set(tmp_path: Path, checkpoint: Path) -> None:
    data = write_scene_set(tmp_path / "set", {"test": 3}, seed=7)
    out = tmp_path / "results.json"
    result = CliRunner().invoke(
        app,
        ["eval", "--data", str(data), "--checkpoint", str(checkpoint), "--out", str(out), "-q", "--batch-size", "2"],
    )
    assert result.exit_code == 0, result.output
    assert "SI-SNRi" in result.output and "all" in result.output
    report = json.loads(out.read_text())
    assert report["summary"]["count"] == 3 and len(report["examples"]) == 3
    for example, folder in zip(report["examples"], sorted((data / "test").iterdir()), strict=True):
        labels = example["label"].split("+")
        mixture, _ = sf.read(folder / "mixture.wav", dtype="float64")
        target = sum(sf.read(folder / f"{label}.wav", dtype="float64")[0] for label in labels)
        want = expected(checkpoint, mixture, target, labels, 44100)
        assert example["si_snri"] == pytest.approx(want["si_snri"], abs=1e-3)
        assert example["snri"] == pytest.approx(want["snri"], abs=1e-3)
    mean = np.mean([e["si_snri"] for e in report["examples"]])
    assert report["summary"]["si_snri"]["mean"] == pytest.approx(mean)


def test_eval_reads_dpm_tse_sets_and_writes_csv(tmp_path: Path, checkpoint: Path) -> None:
    data = write_dpm_set(tmp_path / "dpm")
    out = tmp_path / "results.csv"
    args = ["eval", "--data", str(data), "--checkpoint", str(checkpoint), "--out", str(out), "--batch-size", "3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert [row["label"] for row in rows] == ["Cough"] * 3
    for n, row in enumerate(rows, start=1):
        mixture, _ = sf.read(data / "test" / f"test_{n}.wav", dtype="float64")
        target, _ = sf.read(data / "test" / f"test_{n}_lab.wav", dtype="float64")
        want = expected(checkpoint, mixture, target, ["Cough"], 16000)
        assert float(row["si_snri"]) == pytest.approx(want["si_snri"], abs=1e-3)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--data", "DATA"], 2, "exactly one of --model NAME or --checkpoint DIR"),
        (["--data", "DATA", "--checkpoint", "CKPT", "--out", "r.txt"], 2, "must end in .json or .csv"),
        (["--data", "DATA", "--checkpoint", "CKPT", "--split", "val"], 2, "no rendered scenes"),
        (["--data", "DATA", "--checkpoint", "MISSING"], 2, "no such checkpoint directory"),
        (["--data", "DATA", "--checkpoint", "CKPT", "--device", "gpu0"], 2, "invalid device 'gpu0'; use auto, cpu"),
        (["--data", "DATA", "--checkpoint", "CKPT", "-t", "crop=1"], 2, "unknown option(s) crop for"),
    ],
)
def test_eval_errors(tmp_path: Path, checkpoint: Path, args: list[str], code: int, message: str) -> None:
    data = write_scene_set(tmp_path / "set", {"test": 1})
    subs = {"DATA": str(data), "CKPT": str(checkpoint), "MISSING": str(tmp_path / "nope")}
    result = CliRunner().invoke(app, ["eval", *[subs.get(a, a) for a in args]])
    assert result.exit_code == code
    assert message in " ".join(result.output.split()), result.output
