"""`tse train`: loss goes down, exact resume, NaN handling, data validation, config files (tiny models)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from tiny import TINY
from typer.testing import CliRunner

from tse_cli.checkpoint import load_checkpoint
from tse_cli.cli import app
from tse_cli.data import layout
from tse_cli.train.config import build_config
from tse_cli.train.loop import TrainingError, train
from tse_cli.train.state import load_state

ANSI = re.compile(r"\x1b\[")
RATE = 44100
LABELS = ("Bark", "Cough", "Flute", "Gong")
MODEL_ARGS = TINY["waveformer-small"]


def write_scene_set(root: Path, counts: dict[str, int], seconds: float = 0.25, seed: int = 0) -> Path:
    """A waveformer-recipe set (the layout `tse mix` writes) of tone bursts: each label its own pitch."""
    rng = np.random.default_rng(seed)
    n = round(seconds * RATE)
    t = np.arange(n) / RATE
    root.mkdir(parents=True, exist_ok=True)
    layout.update_info(root, "waveformer", RATE)
    for split, count in counts.items():
        for i in range(count):
            folder = layout.scene_dir(root, split, layout.scene_name(i))
            folder.mkdir(parents=True)
            labels = [LABELS[j] for j in rng.choice(len(LABELS), size=2, replace=False)]
            events, mixture = [], 0.01 * rng.standard_normal(n)
            for label in labels:
                pitch = 300.0 * (1 + LABELS.index(label))
                onset = rng.uniform(0, seconds / 2)
                envelope = ((t >= onset) & (t < onset + seconds / 2)).astype(float)
                event = 0.3 * envelope * np.sin(2 * np.pi * pitch * t + rng.uniform(0, 6))
                sf.write(layout.scene_audio(folder, label), event.astype(np.float32), RATE, subtype="FLOAT")
                mixture = mixture + event
                events.append({"label": label, "onset": onset, "offset": onset + seconds / 2})
            sf.write(layout.scene_audio(folder, layout.MIXTURE), mixture.astype(np.float32), RATE, subtype="FLOAT")
            (folder / layout.RENDER_FILE).write_text(json.dumps({"labels": labels, "events": events}))
    return root


@pytest.fixture(scope="module")
def scene_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_scene_set(tmp_path_factory.mktemp("data") / "set", {"train": 8, "val": 2, "test": 2})


def tiny_config(data: Path, out: Path, **overrides) -> object:
    """A tiny waveformer-small on `data`, logging every step."""
    settings = {
        "arch": "waveformer-small",
        "data": str(data),
        "out": str(out),
        "model_args": MODEL_ARGS,
        "batch_size": 2,
        "num_workers": 0,
        "lr": 3e-3,
        "fixed_epochs": 1,
        "log_every": 1,
        "save_every": 3,
        "epochs": 100,
    }
    return build_config({**settings, **overrides})


def train_losses(run: Path) -> list[float]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [line["loss"] for line in lines if line["event"] == "train"]


def test_a_few_steps_reduce_the_loss(scene_set: Path, tmp_path: Path) -> None:
    result = train(tiny_config(scene_set, tmp_path / "run", max_steps=24))
    losses = train_losses(tmp_path / "run")
    assert result["step"] == 24 and len(losses) == 24
    assert np.mean(losses[-6:]) < np.mean(losses[:6]) - 0.5
    model = load_checkpoint(tmp_path / "run" / "best")
    assert model.config["enc_dim"] == MODEL_ARGS["enc_dim"]
    saved = json.loads((tmp_path / "run" / "train.json").read_text())
    assert saved["max_steps"] == 24 and saved["model_args"] == MODEL_ARGS


def test_resume_replays_an_unbroken_run_exactly(scene_set: Path, tmp_path: Path) -> None:
    train(tiny_config(scene_set, tmp_path / "whole", max_steps=10))
    train(tiny_config(scene_set, tmp_path / "parts", max_steps=5))  # stops in the middle of epoch 1
    state = load_state(tmp_path / "parts" / "last")
    assert (state["step"], state["epoch"], state["batch"]) == (5, 1, 1)
    train(tiny_config(scene_set, tmp_path / "parts", max_steps=10), resume=True)
    assert train_losses(tmp_path / "parts") == train_losses(tmp_path / "whole")
    whole, parts = (load_checkpoint(tmp_path / name / "last").state_dict() for name in ("whole", "parts"))
    assert all(torch.equal(whole[k], parts[k]) for k in whole)


def test_resume_from_a_step_checkpoint_after_a_crash(scene_set: Path, tmp_path: Path, monkeypatch) -> None:
    train(tiny_config(scene_set, tmp_path / "whole", max_steps=8))
    from tse_cli.train import task_wave

    calls = {"n": 0}
    original = task_wave.WaveTask.loss

    def crash_at_seven(self, model, batch, options):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return original(self, model, batch, options)

    monkeypatch.setattr(task_wave.WaveTask, "loss", crash_at_seven)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(scene_set, tmp_path / "crash", max_steps=8))
    monkeypatch.setattr(task_wave.WaveTask, "loss", original)
    assert load_state(tmp_path / "crash" / "last")["step"] == 6  # save_every 3
    train(tiny_config(scene_set, tmp_path / "crash", max_steps=8), resume=True)
    assert train_losses(tmp_path / "crash") == train_losses(tmp_path / "whole")


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(scene_set: Path, tmp_path: Path, monkeypatch) -> None:
    from tse_cli.train import task_wave

    calls = {"n": 0}
    original = task_wave.WaveTask.loss

    def nan_at_five(self, model, batch, options):
        calls["n"] += 1
        loss = original(self, model, batch, options)
        return loss * math.nan if calls["n"] == 5 else loss

    monkeypatch.setattr(task_wave.WaveTask, "loss", nan_at_five)
    with pytest.raises(TrainingError, match=r"step 5 .*loss is nan.*last good checkpoint \(step 4\)"):
        train(tiny_config(scene_set, tmp_path / "run", max_steps=10))
    assert load_state(tmp_path / "run" / "last")["step"] == 4  # the end of epoch 0
    assert load_checkpoint(tmp_path / "run" / "last") is not None


def test_cli_trains_saves_its_config_and_refuses_to_overwrite(scene_set: Path, tmp_path: Path) -> None:
    config = tmp_path / "settings.json"
    config.write_text(json.dumps({"batch_size": 2, "num_workers": 0, "model_args": MODEL_ARGS, "log_every": 1}))
    run = tmp_path / "run"
    args = ["train", "waveformer-small", "--data", str(scene_set), "-o", str(run), "--config", str(config)]
    result = CliRunner().invoke(app, [*args, "--max-steps", "2", "--set", "lr=0.001", "-a", "num_enc_layers=1", "-q"])
    assert result.exit_code == 0, result.output
    saved = json.loads((run / "train.json").read_text())
    assert saved["lr"] == 0.001 and saved["max_steps"] == 2 and saved["batch_size"] == 2
    assert saved["model_args"] == {**MODEL_ARGS, "num_enc_layers": 1} and saved["grad_clip"] == 0.5
    assert len(train_losses(run)) == 2
    again = CliRunner().invoke(app, [*args, "--max-steps", "2"])
    assert again.exit_code == 2 and "already holds a run" in again.output
    resume = ["train", "waveformer-small", "-o", str(run), "--resume", "--max-steps", "3", "--lr", "2e-4", "-q"]
    resumed = CliRunner().invoke(app, resume)
    assert resumed.exit_code == 0, resumed.output
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["lr"] for line in lines if line["event"] == "train"] == [0.001, 0.001, 2e-4]  # --lr on resume


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("nothing", "data folder not found"),
        ("no_val", "no rendered scenes"),
        ("missing_event", ".wav: missing"),
        ("bad_setting", "unknown training setting 'learning_rate'"),
        ("bad_task_arg", "unknown option(s) crop for"),
        ("bad_model_arg", "waveformer-small: unknown argument(s) width; known: label_len"),
        ("bad_device", "cuda:7"),
        ("bad_optimizer", "optimizer: must be one of adam, adamw, got 'sgd'"),
    ],
)
def test_bad_data_and_settings_fail_before_training(tmp_path: Path, breakage: str, message: str) -> None:
    data = tmp_path / "data"
    extra: list[str] = []
    if breakage != "nothing":
        write_scene_set(data, {"train": 2} if breakage == "no_val" else {"train": 2, "val": 1}, seed=3)
    if breakage == "missing_event":
        next(p for p in (data / "train" / "00000").glob("*.wav") if p.name != "mixture.wav").unlink()
    extra = {
        "bad_setting": ["--set", "learning_rate=1"],
        "bad_task_arg": ["-t", "crop=1"],
        "bad_model_arg": ["-a", "width=3"],
        "bad_device": ["--device", "cuda:7"],
        "bad_optimizer": ["--set", "optimizer=sgd"],
    }.get(breakage, [])
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "waveformer-small", "--data", str(data), "-o", str(run), *extra])
    assert result.exit_code == 2, result.output  # a usage error, whichever option or folder is wrong
    assert message in " ".join(result.output.split()), result.output
    assert not (run / "last").exists()


def test_a_set_at_another_rate_is_refused(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    from test_data_common import built_set

    dpm = built_set(tmp_path_factory, "dpm-tse", count=2)  # 16 kHz
    args = ["train", "wavemamba-small", "--data", str(dpm), "-o", str(tmp_path / "run"), "--set", "train_split=val"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "audio at 16000 Hz, but wavemamba-small works at 44100 Hz" in result.output, result.output
    assert "tse mix --recipe waveformer" in result.output and not (tmp_path / "run" / "last").exists()


def test_resume_of_a_finished_run_does_nothing(scene_set: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(tiny_config(scene_set, run, max_steps=3))
    before = {p.name: p.read_bytes() for p in (run / "last").iterdir()}
    metrics = (run / "metrics.jsonl").read_text()
    again = CliRunner().invoke(app, ["train", "waveformer-small", "-o", str(run), "--resume"])
    assert again.exit_code == 0, again.output
    assert "nothing to do" in again.output and "max_steps 3 (step 3)" in again.output
    assert {p.name: p.read_bytes() for p in (run / "last").iterdir()} == before
    assert (run / "metrics.jsonl").read_text() == metrics
    assert train(tiny_config(scene_set, run, max_steps=3), resume=True)["step"] == 3  # the API as well


def test_the_old_short_flag_for_model_args_still_works_with_a_warning(scene_set: Path, tmp_path: Path) -> None:
    args = ["train", "waveformer-small", "--data", str(scene_set), "-o", str(tmp_path / "run"), "-q"]
    args += ["--batch-size", "2", "--num-workers", "0", "--max-steps", "1", "-m", "enc_dim=16", "-a", "dec_dim=8"]
    result = CliRunner().invoke(app, [*args, "-a", "num_enc_layers=1"])
    assert result.exit_code == 0, result.output
    assert "warning: -m for --model-arg is deprecated" in result.output
    saved = json.loads((tmp_path / "run" / "train.json").read_text())["model_args"]
    assert saved == {"enc_dim": 16, "dec_dim": 8, "num_enc_layers": 1}


def test_a_log_of_training_shows_progress_while_it_runs(scene_set: Path, tmp_path: Path) -> None:
    """`tse train > log 2>&1` (stderr not a terminal): plain lines during each epoch and validation, then
    their closing lines; stdout stays empty."""
    args = ["train", "waveformer-small", "--data", str(scene_set), "-o", str(tmp_path / "run"), "--epochs", "2"]
    args += ["--max-steps", "12"]  # epoch 2 stops after 4 of its 8 steps
    args += ["--batch-size", "1", "--num-workers", "0", "-a", "enc_dim=16", "-a", "dec_dim=8", "-a", "num_enc_layers=1"]
    result = CliRunner().invoke(app, args, env={"TSE_PROGRESS_INTERVAL": "0"})
    text = result.stderr
    assert result.exit_code == 0, text
    assert result.stdout == ""
    lines = text.splitlines()
    assert [line for line in lines if line.startswith("epoch 1/2: 1/8 steps, ")], text  # during the epoch
    assert [line for line in lines if re.match(r"validation: 1/2 examples, ", line)], text  # during validation
    closing = [line for line in lines if " in 0:" in line]
    assert [line.split(":")[0] for line in closing] == ["epoch 1/2", "validation", "epoch 2/2", "validation"]
    assert re.search(r"validation: 2 examples in 0:\d\d \(.*\), SI-SNRi -?[\d.]+ dB, SNRi", text)
    assert "epoch 2/2: 4/8 steps in" in text  # closed part-way
    assert lines[-1].startswith("done: 12 steps") and not ANSI.search(text)
