"""Shared helpers for the data tests (a small synthetic FSD/TAU corpus and sets built once per session), plus
tests of the synthetic corpus itself."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tse_cli.classes import FSD_CLASSES
from tse_cli.data import synthetic
from tse_cli.data.build import Options, build
from tse_cli.data.sources import read_fsd, read_tau

SMALL = synthetic.SyntheticSize(
    train_per_class=2, test_per_class=2, dev_backgrounds=3, eval_backgrounds=2, background_seconds=7.0
)
_MADE: dict[str, Path] = {}


def corpus(factory: pytest.TempPathFactory) -> Path:
    """The small synthetic corpus (out/fsd, out/tau), written once per test session."""
    if "corpus" not in _MADE:
        _MADE["corpus"] = factory.mktemp("corpus")
        synthetic.write_corpus(_MADE["corpus"], SMALL, seed=0)
    return _MADE["corpus"]


def built_set(factory: pytest.TempPathFactory, recipe: str, count: int = 3, **kw) -> Path:
    """A set built from the corpus once per (recipe, count, options) per session; do not modify it."""
    key = f"{recipe}-{count}-{sorted(kw.items())}"
    if key not in _MADE:
        root = corpus(factory)
        out = factory.mktemp(recipe)
        summary = build(Options(recipe, root / "fsd", root / "tau", out, count=count, jobs=1, **kw))
        assert not summary.failed, summary.failed
        _MADE[key] = out
    return _MADE[key]


def copy_set(src: Path, dst: Path) -> Path:
    """A private copy of a built set (without its source cache)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".cache"))
    return dst


def tree_bytes(root: Path, pattern: str = "*.wav") -> dict[str, bytes]:
    """Relative path -> bytes of every matching file under `root` (hidden cache excluded)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob(pattern)) if ".cache" not in p.parts}


def test_corpus_has_the_downloaded_layouts(tmp_path_factory):
    root = corpus(tmp_path_factory)
    fsd = read_fsd(root / "fsd")
    assert len(fsd.clips["train"]) == 41 * SMALL.train_per_class
    assert len(fsd.clips["test"]) == 41 * SMALL.test_per_class
    assert {c.label for c in fsd.clips["train"]} == set(FSD_CLASSES)
    assert not fsd.missing and not fsd.extra
    tau = read_tau(root / "tau", ("development", "evaluation"))
    assert len(tau.clips["development"]) == SMALL.dev_backgrounds
    assert len(tau.clips["evaluation"]) == SMALL.eval_backgrounds
    info = sf.info(str(tau.clips["development"][0].path))
    assert (info.samplerate, info.channels, info.subtype) == (48000, 2, "PCM_24")
    assert info.duration == pytest.approx(SMALL.background_seconds)
    info = sf.info(str(fsd.clips["train"][0].path))
    assert (info.samplerate, info.channels, info.subtype) == (44100, 1, "PCM_16")


def test_corpus_is_deterministic(tmp_path):
    size = synthetic.SyntheticSize(1, 0, 1, 0, 0.5, max_clip_seconds=0.5)
    a, b = tmp_path / "a", tmp_path / "b"
    synthetic.write_corpus(a, size, seed=3)
    synthetic.write_corpus(b, size, seed=3)
    assert tree_bytes(a) == tree_bytes(b)
    synthetic.write_corpus(tmp_path / "c", size, seed=4)
    assert tree_bytes(a) != tree_bytes(tmp_path / "c")


def _log_spectrum(x: np.ndarray, n_fft: int = 2048) -> np.ndarray:
    """Mean log magnitude spectrum of the active frames, level-normalised."""
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[:: n_fft // 2] * np.hanning(n_fft)
    energy = (frames**2).sum(axis=1)
    spec = np.log(np.abs(np.fft.rfft(frames[energy > 0.1 * energy.max()], axis=1)).mean(axis=0) + 1e-6)
    return spec - spec.mean()


def test_classes_are_distinct_and_clips_vary():
    """A nearest-centroid classifier on average log spectra separates the 41 classes on unseen clips."""
    train, test = [], []
    for ci in range(41):
        specs = [_log_spectrum(synthetic.synth_clip(ci, np.random.default_rng([ci, k]))) for k in range(4)]
        train.append(np.mean(specs[:3], axis=0))
        test.append(specs[3])
        assert not np.allclose(specs[0], specs[1])  # clips of a class differ
    train, test = np.array(train), np.array(test)
    dist = ((test[:, None] - train[None]) ** 2).sum(-1)
    accuracy = (dist.argmin(1) == np.arange(41)).mean()
    assert accuracy >= 0.85


def test_clips_have_onsets_and_silent_gaps():
    clip = synthetic.synth_clip(5, np.random.default_rng(0))
    hop = 441
    env = np.abs(clip[: clip.size // hop * hop]).reshape(-1, hop).max(axis=1)
    assert env.max() > 0.09 and env.min() < 0.0005  # loud events and near-silent gaps below the threshold
