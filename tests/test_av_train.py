"""AV training on MuSE-style sets: the list reader and its validation, a few steps of `tse train`, `tse eval`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from tiny import TINY, tiny
from typer.testing import CliRunner

from tse_cli.checkpoint import load_checkpoint
from tse_cli.cli import app
from tse_cli.data.muse import MuseError, MuseSet, list_split, validate_split
from tse_cli.train.config import build_config
from tse_cli.train.loop import train
from tse_cli.train.tasks import DataError, get_task

RATE = 16000
FRAME = 640  # samples per 25 fps video frame


def write_mixture(folder: Path, rng: np.random.Generator, frames: int = 10, clue_frames: int | None = None) -> None:
    """Two tones switched on and off per video frame; each speaker's "lip embedding" is its own on/off envelope
    (times a fixed random 512-d direction), so only the clue tells the two targets apart."""
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(frames * FRAME) / RATE
    direction = np.random.default_rng(123).standard_normal(512)
    mixture = 0.01 * rng.standard_normal(t.size)
    for speaker in range(2):
        envelope = rng.random(frames) < 0.5
        envelope[speaker] = True  # never silent
        pitch = rng.uniform(200, 1200)
        source = 0.3 * np.repeat(envelope, FRAME) * np.sin(2 * np.pi * pitch * t)
        sf.write(folder / f"s{speaker}.wav", source.astype(np.float32), RATE, subtype="FLOAT")
        mixture = mixture + source
        clue = (2 * envelope[:, None] - 1.0) * direction[None, :]
        np.save(folder / f"v{speaker}_embedding.npy", clue[: clue_frames or frames].astype(np.float32))
    sf.write(folder / "mixture.wav", mixture.astype(np.float32), RATE, subtype="FLOAT")


def write_av_set(root: Path, counts: dict[str, int], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, count in counts.items():
        for i in range(count):
            write_mixture(root / split / f"id{i:03d}", rng)
    return root


@pytest.fixture(scope="module")
def av_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_av_set(tmp_path_factory.mktemp("av") / "set", {"train": 4, "val": 1, "test": 1})


def test_folder_and_list_layouts(tmp_path, av_set):
    mixtures = validate_split(av_set, "train")
    assert [m.uid for m in mixtures] == ["id000", "id001", "id002", "id003"]
    assert all(m.samples == 10 * FRAME for m in mixtures)
    # published-style list: "UID FOLDER", absolute or relative to the data folder, or just FOLDER
    (tmp_path / "train.scp").write_text(f"a {av_set / 'train' / 'id001'}\n\nb ../{av_set.name}/train/id002\n")
    (tmp_path / "val.scp").write_text(f"{av_set / 'val' / 'id000'}\n")
    listed = list_split(tmp_path, "train")
    assert [m.uid for m in listed] == ["a", "b"]
    # the published lists name folders on the authors' machine: found again under <root>/<split>/
    (av_set / "test.scp").write_text("x /mnt/user/someone/voxceleb2/test/id000\n")
    assert list_split(av_set, "test")[0].folder == av_set / "test" / "id000"
    (av_set / "test.scp").unlink()
    assert validate_split(tmp_path, "val")[0].folder == av_set / "val" / "id000"


def test_examples_one_per_speaker_with_aligned_clues(av_set):
    data = MuseSet(av_set, "train")
    assert len(data) == 8
    first, second = data[0], data[1]
    assert first["mixture"].shape == (1, 10 * FRAME) and first["clue"].shape == (10, 512)
    assert torch.equal(first["mixture"], second["mixture"]) and not torch.equal(first["target"], second["target"])
    assert first["mixture"].abs().max().item() == pytest.approx(1.0)  # peak-normalised, target by the same gain
    raw, _ = sf.read(av_set / "train" / "id000" / "s1.wav", dtype="float32")
    peak = np.abs(sf.read(av_set / "train" / "id000" / "mixture.wav", dtype="float32")[0]).max()
    assert np.allclose(second["target"][0].numpy(), raw / peak)


def test_crops_follow_video_frames(av_set):
    crop = 4 * FRAME
    data = MuseSet(av_set, "train", crop / RATE, normalize=False, rng=lambda i: np.random.default_rng(i + 5))
    whole = MuseSet(av_set, "train", normalize=False)
    starts = set()
    for index in range(8):
        item, full = data[index], whole[index]
        assert item["mixture"].shape == (1, crop) and item["clue"].shape == (4, 512)
        offsets = [
            s
            for s in range(0, 10 * FRAME - crop + 1)
            if torch.equal(full["mixture"][..., s : s + crop], item["mixture"])
        ]
        assert len(offsets) == 1 and offsets[0] % FRAME == 0
        first = offsets[0] // FRAME
        assert torch.equal(item["target"], full["target"][..., offsets[0] : offsets[0] + crop])
        assert torch.equal(item["clue"], full["clue"][first : first + 4])
        starts.add(first)
    assert len(starts) > 1


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / "s1.wav").unlink(), r"id000/s1.wav: missing"),
        (lambda f: (f / "v0_embedding.npy").unlink(), r"id000/v0_embedding.npy: no such file"),
        (lambda f: sf.write(f / "s0.wav", np.zeros(6000, np.float32), RATE), r"s0.wav: 6000 samples, but mixture"),
        (lambda f: sf.write(f / "mixture.wav", np.zeros(6400, np.float32), 8000), "sample rate 8000 Hz, expected"),
        (lambda f: sf.write(f / "mixture.wav", np.zeros((6400, 2), np.float32), RATE), "2 channels, expected mono"),
        (lambda f: (f / "s0.wav").write_bytes(b"RIFF...."), r"s0.wav: not readable audio"),
        (lambda f: np.save(f / "v1_embedding.npy", np.zeros((10, 256))), r"v1_embedding.npy: expected lip embeddings"),
        (lambda f: np.save(f / "v1_embedding.npy", np.zeros((30, 512))), r"30 frames for 0.40 s of audio"),
    ],
)
def test_validation_names_the_problem(tmp_path, damage, message):
    write_mixture(tmp_path / "set" / "train" / "id000", np.random.default_rng(0))
    damage(tmp_path / "set" / "train" / "id000")
    with pytest.raises(MuseError, match=message) as err:
        validate_split(tmp_path / "set", "train")
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match=message):
        get_task("av-sepmamba-small").validate(tmp_path / "set", ("train",))


def test_missing_splits_and_bad_lists(tmp_path):
    with pytest.raises(MuseError, match="no train.scp list and no train/ folder"):
        list_split(tmp_path, "train")
    (tmp_path / "val").mkdir()
    with pytest.raises(MuseError, match="val: no mixtures"):
        list_split(tmp_path, "val")
    (tmp_path / "test.scp").write_text("a b c\n")
    with pytest.raises(MuseError, match=r"test.scp:1: expected 'UID FOLDER'"):
        list_split(tmp_path, "test")
    (tmp_path / "test.scp").write_text("a nowhere\n")
    with pytest.raises(MuseError, match="nowhere: mixture folder not found"):
        validate_split(tmp_path, "test")


def test_collate_pads_audio_and_repeats_the_last_clue_frame(tmp_path):
    write_mixture(tmp_path / "train" / "a", np.random.default_rng(0), frames=6)
    write_mixture(tmp_path / "train" / "b", np.random.default_rng(1), frames=9)
    task = get_task("av-sepformer-small")
    data = task.dataset(tmp_path, "train", task.options, train=False)
    batch = task.collate([data[0], data[2]])
    assert batch["mixture"].shape == (2, 1, 9 * FRAME) and batch["clue"].shape == (2, 9, 512)
    assert batch["length"].tolist() == [6 * FRAME, 9 * FRAME]
    assert torch.equal(batch["clue"][0, 6:], batch["clue"][0, 5:6].expand(3, -1))


@pytest.mark.parametrize("arch", ["av-sepformer-small", "av-sepmamba-small"])
def test_training_reduces_the_loss_and_eval_reports(tmp_path, av_set, arch):
    seed = 0
    config = build_config(
        {
            "arch": arch,
            "data": str(av_set),
            "out": str(tmp_path / "run"),
            "model_args": TINY[arch],
            "batch_size": 4,
            "num_workers": 0,
            "lr": 3e-3,
            "epochs": 4,
            "log_every": 1,
            "seed": seed,
            "task": {"crop_seconds": 4 * FRAME / RATE},
        },
    )
    task = get_task(arch)
    assert task.hyper["lr"] == 1.5e-4 and task.hyper["grad_clip"] == 5.0 and task.hyper["optimizer"] == "adam"
    data = task.dataset(av_set, "train", task.options, train=False)
    batch = task.collate([data[i] for i in range(len(data))])

    def loss_of(model: torch.nn.Module) -> float:
        with torch.no_grad():
            return task.loss(model.eval(), batch, task.options).item()

    torch.manual_seed(seed)
    before = loss_of(tiny(arch))
    result = train(config)
    assert result["step"] == 8
    after = loss_of(load_checkpoint(tmp_path / "run" / "last"))
    assert after < before - 0.5, (before, after)

    out = tmp_path / "results.json"
    run = CliRunner().invoke(
        app, ["eval", "--data", str(av_set), "--checkpoint", str(tmp_path / "run" / "last"), "--out", str(out)]
    )
    assert run.exit_code == 0, run.output
    results = json.loads(out.read_text())
    assert results["summary"]["count"] == 2 and len(results["examples"]) == 2  # one test mixture, two speakers
    # the reported SI-SNRi equals an independent computation on the unnormalised files
    model = load_checkpoint(tmp_path / "run" / "last")
    folder = av_set / "test" / "id000"
    mixture = sf.read(folder / "mixture.wav", dtype="float32")[0]
    for speaker, example in enumerate(results["examples"]):
        target = sf.read(folder / f"s{speaker}.wav", dtype="float32")[0]
        clue = torch.from_numpy(np.load(folder / f"v{speaker}_embedding.npy"))[None]
        with torch.no_grad():
            estimate = model(torch.from_numpy(mixture / np.abs(mixture).max())[None, None], clue)[0, 0].double()
        assert example["si_snri"] == pytest.approx(si_snr(estimate.numpy(), target) - si_snr(mixture, target), abs=1e-3)


def si_snr(estimate: np.ndarray, reference: np.ndarray) -> float:
    estimate, reference = estimate - estimate.mean(), reference - reference.mean()
    projection = (estimate @ reference) / (reference @ reference) * reference
    return 10 * np.log10((projection @ projection) / ((estimate - projection) @ (estimate - projection)))
