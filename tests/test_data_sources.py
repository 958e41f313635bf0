"""FSD Kaggle 2018 / TAU 2019 readers: the downloaded layouts, partial downloads and every validation error."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tse_cli.data.sources import DataError, read_fsd, read_tau
from tse_cli.data.wavio import SourceCache, SourceError, decode, write_wav

TAU_DEV = "TAU-urban-acoustic-scenes-2019-development"
TAU_EVAL = "TAU-urban-acoustic-scenes-2019-evaluation"


def _wav(path: Path, seconds: float = 0.5, rate: int = 44100, channels: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = 0.1 * np.random.default_rng(0).standard_normal((int(seconds * rate), channels))
    sf.write(str(path), data, rate, subtype="PCM_16")


def _fsd(root: Path, train=(("a.wav", "Bark"), ("b.wav", "Cough")), test=(("t.wav", "Bark"),)) -> Path:
    meta = root / "FSDKaggle2018.meta"
    meta.mkdir(parents=True)
    rows = "".join(f"{f},{lab},1,0,CC0\n" for f, lab in train)
    (meta / "train_post_competition.csv").write_text("fname,label,manually_verified,freesound_id,license\n" + rows)
    rows = "".join(f"{f},{lab},Public,0,CC0\n" for f, lab in test)
    (meta / "test_post_competition_scoring_clips.csv").write_text("fname,label,usage,freesound_id,license\n" + rows)
    for f, _ in train:
        _wav(root / "FSDKaggle2018.audio_train" / f)
    for f, _ in test:
        _wav(root / "FSDKaggle2018.audio_test" / f)
    return root


def _tau(root: Path, names=("park-lyon-1-10-a.wav", "bus-milan-2-20-a.wav")) -> Path:
    dev = root / TAU_DEV
    rows = "".join(f"audio/{n}\t{n.split('-')[0]}\t{n.rsplit('-', 2)[0]}\ta\n" for n in names)
    dev.mkdir(parents=True)
    (dev / "meta.csv").write_text("filename\tscene_label\tidentifier\tsource_label\n" + rows)
    for n in names:
        _wav(dev / "audio" / n, 1.0, 48000, 2)
    ev = root / TAU_EVAL
    (ev / "evaluation_setup").mkdir(parents=True)
    (ev / "evaluation_setup" / "fold1_test.csv").write_text("filename\naudio/0.wav\n")
    _wav(ev / "audio" / "0.wav", 1.0, 48000, 2)
    return root


def test_fsd_layout_is_read(tmp_path):
    corpus = read_fsd(_fsd(tmp_path))
    assert [(c.fname, c.label, c.subset) for c in corpus.clips["train"]] == [
        ("a.wav", "Bark", "train"),
        ("b.wav", "Cough", "train"),
    ]
    assert [c.fname for c in corpus.clips["test"]] == ["t.wav"]
    assert set(corpus.by_name()) == {"a.wav", "b.wav", "t.wav"}


def test_fsd_found_one_level_down(tmp_path):
    _fsd(tmp_path / "FSDKaggle2018")
    assert len(read_fsd(tmp_path).clips["train"]) == 2


def test_partial_download_lists_missing_and_extra(tmp_path):
    root = _fsd(tmp_path)
    (root / "FSDKaggle2018.audio_train" / "b.wav").unlink()
    _wav(root / "FSDKaggle2018.audio_train" / "stray.wav")
    corpus = read_fsd(root, ("train",))
    assert [c.fname for c in corpus.clips["train"]] == ["a.wav"]
    assert [p.name for p in corpus.missing] == ["b.wav"]
    assert [p.name for p in corpus.extra] == ["stray.wav"]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda r: None, r"nowhere: FSD Kaggle 2018 folder does not exist"),
        (lambda r: _rm(r / "FSDKaggle2018.meta"), r"no FSDKaggle2018.meta folder found"),
        (
            lambda r: (r / "FSDKaggle2018.meta/train_post_competition.csv").unlink(),
            r"train_post_competition.csv: missing",
        ),
        (lambda r: _rm(r / "FSDKaggle2018.audio_train"), r"no FSDKaggle2018.audio_train folder found"),
        (
            lambda r: (r / "FSDKaggle2018.meta/train_post_competition.csv").write_text("file,label\na.wav,Bark\n"),
            r"train_post_competition.csv: missing column\(s\) fname",
        ),
        (
            lambda r: (r / "FSDKaggle2018.meta/train_post_competition.csv").write_text("fname,label\na.wav,Barking\n"),
            r"train_post_competition.csv:2: unknown label 'Barking'",
        ),
        (
            lambda r: (r / "FSDKaggle2018.meta/train_post_competition.csv").write_text("fname,label\n,Bark\n"),
            r"train_post_competition.csv:2: empty file name",
        ),
        (
            lambda r: (r / "FSDKaggle2018.meta/train_post_competition.csv").write_text("fname,label\nz.wav,Bark\n"),
            r"audio_train: none of the 1 clips listed in train_post_competition.csv are there",
        ),
    ],
)
def test_fsd_validation_errors(tmp_path, damage, message):
    root = _fsd(tmp_path / "fsd")
    damage(root)
    target = tmp_path / "nowhere" if "nowhere" in message else root
    with pytest.raises(DataError, match=message):
        read_fsd(target, ("train",))


def _rm(path: Path) -> None:
    shutil.rmtree(path)


def test_tau_layout_is_read(tmp_path):
    corpus = read_tau(_tau(tmp_path), ("development", "evaluation"))
    assert [(c.fname, c.label) for c in corpus.clips["development"]] == [
        ("park-lyon-1-10-a.wav", "park"),
        ("bus-milan-2-20-a.wav", "bus"),
    ]
    assert [c.fname for c in corpus.clips["evaluation"]] == ["0.wav"]
    # the development folder itself is accepted too
    assert len(read_tau(tmp_path / TAU_DEV).clips["development"]) == 2


@pytest.mark.parametrize(
    ("damage", "subsets", "message"),
    [
        (lambda r: _rm(r / TAU_DEV), ("development",), rf"no {TAU_DEV} folder found"),
        (lambda r: _rm(r / TAU_DEV / "audio"), ("development",), r"audio: missing \(unzip"),
        (lambda r: (r / TAU_DEV / "meta.csv").unlink(), ("development",), r"meta.csv: missing"),
        (
            lambda r: (r / TAU_DEV / "meta.csv").write_text("filename,scene_label\naudio/x.wav,park\n"),
            ("development",),
            r"meta.csv: missing column\(s\) filename \(tab-separated header expected",
        ),
        (lambda r: _rm(r / TAU_EVAL / "evaluation_setup"), ("evaluation",), r"meta.csv: missing"),
        (lambda r: _rm(r / TAU_EVAL), ("evaluation",), rf"no {TAU_EVAL} folder found"),
    ],
)
def test_tau_validation_errors(tmp_path, damage, subsets, message):
    root = _tau(tmp_path)
    damage(root)
    with pytest.raises(DataError, match=message):
        read_tau(root, subsets)


def test_unreadable_clip_is_named(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(SourceError, match=r"bad.wav: unreadable"):
        decode(bad, 16000)
    with pytest.raises(SourceError, match=r"gone.wav: unreadable"):
        SourceCache(16000, None).key(tmp_path / "gone.wav")


def test_decode_resamples_and_downmixes(tmp_path):
    path = tmp_path / "s.wav"
    t = np.arange(48000) / 48000
    sf.write(str(path), np.stack([np.sin(2 * np.pi * 440 * t), -np.sin(2 * np.pi * 440 * t)], 1) * 0.5, 48000)
    out = decode(path, 16000)
    assert out.shape == (16000,) and out.dtype == np.float32
    assert np.abs(out).max() < 1e-4  # opposite channels cancel in the mono mix
    sf.write(str(path), np.sin(2 * np.pi * 440 * t) * 0.5, 48000)
    out = decode(path, 16000)
    assert np.sqrt(np.mean(out[100:-100] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=1e-3)


def test_cache_reuses_disk_copy_and_notices_edits(tmp_path):
    path = tmp_path / "c.wav"
    _wav(path, 0.2, 44100)
    cache = SourceCache(16000, tmp_path / "cache")
    first = cache.get(path)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 1
    again = SourceCache(16000, tmp_path / "cache").get(path)
    np.testing.assert_array_equal(first, again)
    _wav(path, 0.3, 44100)  # replaced: new size -> new key
    assert SourceCache(16000, tmp_path / "cache").get(path).size == 4800


@pytest.mark.parametrize("channels", [1, 2, 6])
def test_write_wav_pcm16_is_the_canonical_file(tmp_path, channels):
    """PCM_16 sets are byte-stable: a 44-byte header, then round(x * 32768) to nearest, clipped to int16."""
    x = np.random.default_rng(channels).standard_normal((999, channels)) * 0.7
    x[:4, 0] = [0.5 / 32768, 1.5 / 32768, 1.2, -1.2]  # ties to even; beyond full scale clips
    write_wav(tmp_path / "a.wav", x[:, 0] if channels == 1 else x, 16000)
    data = np.clip(np.rint(x.astype(np.float32) * np.float32(32768)), -32768, 32767).astype("<i2").tobytes()
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(data), b"WAVE", b"fmt ", 16, 1, channels,
        16000, 16000 * 2 * channels, 2 * channels, 16, b"data", len(data),
    )  # fmt: skip
    assert (tmp_path / "a.wav").read_bytes() == header + data
    assert [p.name for p in tmp_path.iterdir()] == ["a.wav"]
