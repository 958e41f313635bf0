"""The dpm-tse (Tim-TSENet) recipe: silence removal, placement, SNRs measured back from files, splits, resume."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_atomic import dead_pid
from test_data_common import built_set, copy_set, corpus, tree_bytes

from tse_cli.data import dpm
from tse_cli.data.build import Options, build
from tse_cli.data.rerender import render_spec
from tse_cli.data.sources import Clip, DataError
from tse_cli.data.wavio import decode

SR = dpm.SAMPLE_RATE
HOP = SR // 10


def _hops(pattern: str) -> np.ndarray:
    """Audio from a pattern of 100 ms hops: L loud, S silent (below the 0.0005 threshold)."""
    rng = np.random.default_rng(0)
    parts = [0.2 * rng.standard_normal(HOP) if c == "L" else 1e-4 * rng.standard_normal(HOP) for c in pattern]
    return np.concatenate(parts).astype(np.float32)


def test_remove_silence_drops_silent_200ms_windows():
    x = _hops("L" * 5 + "S" * 4 + "L" * 10 + "S" * 11)  # 3 s
    y = dpm.remove_silence(x)
    # pairs of silent hops go; a lone silent hop at the end survives (a window needs two hops)
    expected = np.concatenate([x[: 5 * HOP], x[9 * HOP : 19 * HOP], x[29 * HOP : 30 * HOP]])
    np.testing.assert_array_equal(y, expected)


def test_remove_silence_keeps_clean_and_short_clips_whole():
    loud = _hops("L" * 25)[: int(2.55 * SR)]
    np.testing.assert_array_equal(dpm.remove_silence(loud), loud)  # nothing removed: tail kept
    short = _hops("SSSSSSSS")  # 0.8 s: under one second, untouched
    np.testing.assert_array_equal(dpm.remove_silence(short), short)
    with_gap = np.concatenate([_hops("LLSSLLLLLLLLLLLLLLLLL"), _hops("L")[:800]])  # 2.15 s
    # 2 whole seconds = 20 hops scanned, 2 removed; the hop past 2 s and the 800-sample tail are dropped
    assert dpm.remove_silence(with_gap).size == 18 * HOP


def test_prepare_cuts_and_pads():
    long = _hops("L" * 120)  # 12 s
    assert dpm.prepare(long, "foreground").size == dpm.SAMPLES - 100
    assert dpm.prepare(long, "reference").size == dpm.SAMPLES
    assert dpm.prepare(long, "background").size == dpm.SAMPLES
    short = _hops("L" * 30)
    bg = dpm.prepare(short, "background")
    assert bg.size == dpm.SAMPLES and not bg[short.size :].any()


def _clips(n_labels: int, per_label: int) -> list[Clip]:
    names = [(f"L{lab}", f"{lab}_{k}.wav") for lab in range(n_labels) for k in range(per_label)]
    return [Clip(Path("/x") / fname, fname, label, "train") for label, fname in names]


def test_published_split_sizes_use_every_target_five_times_in_train():
    clips = _clips(4, 3)
    pools = dpm.Pools(clips, clips, clips[:1])
    assert dpm.split_size(pools, "train") == 5 * 12 and dpm.split_size(pools, "val") == 12
    drawn = [dpm.target_of(pools, 7, "train", i).fname for i in range(60)]
    assert all(drawn.count(c.fname) == 5 for c in clips)
    for p in range(5):  # each pass is a permutation of all targets
        assert sorted(drawn[12 * p : 12 * p + 12]) == sorted(c.fname for c in clips)
    assert [dpm.target_of(pools, 7, "val", i).fname for i in range(12)] != drawn[:12]


def _specs(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.glob("specs/*/*.json")) if not p.name.endswith(".done.json")]


def _read(path: Path) -> np.ndarray:
    data, rate = sf.read(str(path), dtype="float64")
    assert rate == SR and data.shape == (dpm.SAMPLES,)
    return data


def _rms(x: np.ndarray) -> float:
    return math.sqrt(float(np.mean(x**2)))


def test_counts_per_split_and_meta_csv(tmp_path_factory):
    root = built_set(tmp_path_factory, "dpm-tse", count=3, stems=True)
    for split in ("train", "val", "test"):
        mixtures = [p for p in (root / split).glob("*.wav") if not p.stem.endswith(("_lab", "_re"))]
        assert sorted(p.name for p in mixtures) == [f"{split}_{n}.wav" for n in (1, 2, 3)]
        for p in mixtures:
            assert p.with_name(f"{p.stem}_lab.wav").is_file() and p.with_name(f"{p.stem}_re.wav").is_file()
    with (root / "meta.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["subset", "folder", "file", "cls", "onset", "offset"]
    assert [(r["subset"], r["file"]) for r in rows[:3]] == [("train", f"train_{n}.wav") for n in (1, 2, 3)]
    assert len(rows) == 9
    for r in rows:  # the published loader's paths: data_dir/folder/file
        assert (root / r["folder"] / r["file"]).is_file()
        assert r["cls"].endswith(".0") and 0 <= float(r["cls"]) < 41
    info = json.loads((root / "recipe.json").read_text())
    assert (
        info["recipe"] == "dpm-tse"
        and info["sample_rate"] == SR
        and info["splits"] == {"train": 3, "val": 3, "test": 3}
    )


def test_sources_placement_and_snrs_measured_from_files(tmp_path_factory):
    root = built_set(tmp_path_factory, "dpm-tse", count=3, stems=True)
    checked_int = checked_bg = 0
    for spec in _specs(root):
        name, split, t = spec["name"], spec["split"], spec["target"]
        # 1-3 interferers, all of other classes; a same-class reference from another file
        assert 1 <= len(spec["interferers"]) <= 3
        assert all(i["label"] != t["label"] for i in spec["interferers"])
        assert spec["reference"]["label"] == t["label"] and spec["reference"]["fname"] != t["fname"]
        assert -5 <= spec["interferer_snr_db"] <= 10 and 5 <= spec["background"]["snr_db"] <= 20
        # onset/offset in seconds match the target's place on the canvas
        lab = _read(root / split / f"{name}_lab.wav")
        nz = np.flatnonzero(lab)
        assert t["start"] <= nz[0] and nz[-1] < t["start"] + t["length"]
        assert t["onset"] == t["start"] / SR and t["offset"] == (t["start"] + t["length"]) / SR
        assert t["start"] + t["length"] <= dpm.SAMPLES
        # the target on the canvas is the silence-removed source clip
        src = dpm.prepare(decode(t["path"], SR), "foreground")
        assert src.size == t["length"]
        np.testing.assert_allclose(lab[t["start"] : t["start"] + t["length"]], src, atol=1 / 32768)
        target = lab[t["start"] : t["start"] + t["length"]]
        stems = root / "stems" / split
        for k, inter in enumerate(spec["interferers"], start=1):
            audio = _read(stems / f"{name}_int{k}.wav")
            part = audio[inter["start"] : inter["start"] + inter["length"]]
            if np.abs(part).max() < 1:
                measured = 20 * math.log10(_rms(target) / _rms(part))
                assert measured == pytest.approx(spec["interferer_snr_db"], abs=0.1)
                checked_int += 1
        bg = _read(stems / f"{name}_background.wav")
        assert 20 * math.log10(_rms(target) / _rms(bg)) == pytest.approx(spec["background"]["snr_db"], abs=0.1)
        checked_bg += 1
        # the mixture is the sum of its parts (when nothing clipped)
        mix = _read(root / split / f"{name}.wav")
        parts = lab + bg + sum(_read(stems / f"{name}_int{k}.wav") for k in range(1, len(spec["interferers"]) + 1))
        if np.abs(parts).max() < 1:
            np.testing.assert_allclose(mix, parts, atol=4 / 32768)
    assert checked_int >= 5 and checked_bg == 9


def test_silence_removal_shortens_some_targets(tmp_path_factory):
    root = built_set(tmp_path_factory, "dpm-tse", count=3, stems=True)
    shorter = [s for s in _specs(root) if s["target"]["length"] < decode(s["target"]["path"], SR).size]
    assert shorter


def test_jobs_do_not_change_a_byte(tmp_path_factory, tmp_path):
    ref = built_set(tmp_path_factory, "dpm-tse", count=3, stems=True)
    src = corpus(tmp_path_factory)
    out = tmp_path / "two"
    opts = Options("dpm-tse", src / "fsd", src / "tau", out, count=3, jobs=2, stems=True, cache_dir=ref / ".cache")
    summary = build(opts)  # decoded sources shared with the jobs=1 build: only the mixing differs
    assert summary.rendered == 9 and not summary.failed
    assert tree_bytes(out) == tree_bytes(ref)
    assert tree_bytes(out, "*.json") == {k: v for k, v in tree_bytes(ref, "*.json").items()}
    assert (out / "meta.csv").read_bytes() == (ref / "meta.csv").read_bytes()


def test_resume_redoes_only_unfinished_and_cleans_temporaries(tmp_path_factory, tmp_path):
    ref = built_set(tmp_path_factory, "dpm-tse", count=3, stems=True)
    src = corpus(tmp_path_factory)
    out = copy_set(ref, tmp_path / "set")
    (out / "specs/val/val_2.done.json").unlink()  # as if killed between audio and record
    (out / "specs/test/test_3.done.json").unlink()
    (out / "test/test_3.wav").unlink()
    stale = out / f"test/.test_3_lab.wav.tse-{dead_pid()}-0123abcd.part"
    stale.write_bytes(b"partial")
    summary = build(Options("dpm-tse", src / "fsd", src / "tau", out, count=3, stems=True, cache_dir=ref / ".cache"))
    assert (summary.rendered, summary.resumed) == (2, 7)
    assert not stale.exists()
    assert tree_bytes(out) == tree_bytes(ref)


def test_resume_with_other_settings_is_refused(tmp_path_factory, tmp_path):
    ref = built_set(tmp_path_factory, "dpm-tse", count=3, stems=True)
    src = corpus(tmp_path_factory)
    out = copy_set(ref, tmp_path / "set")
    with pytest.raises(DataError, match=r"built with seed=0, this run asks seed=5"):
        build(Options("dpm-tse", src / "fsd", src / "tau", out, count=3, seed=5))


def test_render_spec_regenerates_identical_files(tmp_path_factory, tmp_path):
    ref = built_set(tmp_path_factory, "dpm-tse", count=3, stems=True)
    out = copy_set(ref, tmp_path / "set")
    for suffix in ("", "_lab", "_re"):
        (out / "val" / f"val_1{suffix}.wav").unlink()
    result, where = render_spec(out / "specs/val/val_1.json", None, None, None, None)
    assert where == out / "val" and result.name == "val_1"
    assert tree_bytes(out / "val") == tree_bytes(ref / "val")


def test_render_spec_finds_moved_sources_by_name(tmp_path_factory, tmp_path):
    ref = built_set(tmp_path_factory, "dpm-tse", count=3, stems=True)
    moved = tmp_path / "moved"
    shutil.copytree(corpus(tmp_path_factory), moved)
    spec = json.loads((ref / "specs/train/train_2.json").read_text())
    for part in [spec["target"], spec["reference"], spec["background"], *spec["interferers"]]:
        part["path"] = "/data/elsewhere/" + part["fname"]
    spec_path = tmp_path / "specs" / "train" / "train_2.json"
    spec_path.parent.mkdir(parents=True)
    spec_path.write_text(json.dumps(spec))
    render_spec(spec_path, moved / "fsd", moved / "tau", tmp_path / "out", None)
    for suffix in ("", "_lab", "_re"):
        name = f"train_2{suffix}.wav"
        assert (tmp_path / "out/train" / name).read_bytes() == (ref / "train" / name).read_bytes()


def test_clipping_is_reported_or_normalised(tmp_path_factory, tmp_path):
    ref = built_set(tmp_path_factory, "dpm-tse", count=3, stems=True)
    spec = json.loads((ref / "specs/train/train_1.json").read_text())
    boost = 2.5 / float(np.abs(dpm.prepare(decode(spec["target"]["path"], SR), "foreground")).max())
    spec["target"]["gain"] = boost
    for normalize in (False, True):
        path = tmp_path / f"n{int(normalize)}" / "specs" / "train" / "train_1.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({**spec, "normalize": normalize}))
        result, where = render_spec(path, None, None, None, None)
        record = json.loads(path.with_name("train_1.done.json").read_text())
        mix, lab = _read(where / "train_1.wav"), _read(where / "train_1_lab.wav")
        assert record["peak"] > 2
        if normalize:
            assert result.clipped == 0 and record["normalize_gain"] == pytest.approx(0.99 / record["peak"])
            assert np.abs(mix).max() == pytest.approx(0.99, abs=1e-4)
            raw = _read(ref / "train/train_1_lab.wav") * boost
            np.testing.assert_allclose(lab, raw * record["normalize_gain"], atol=1e-3)  # targets scaled alike
        else:
            assert result.clipped > 0 and record["clipped_samples"] == result.clipped
            assert record["normalize_gain"] == 1.0


@pytest.mark.parametrize("recipe", ["dpm-tse", "waveformer"])
def test_unreadable_clips_are_skipped_listed_and_counted(tmp_path_factory, tmp_path, recipe):
    src = shutil.copytree(corpus(tmp_path_factory), tmp_path / "src")
    bad_fg = sorted((src / "fsd/FSDKaggle2018.audio_test").glob("*.wav"))[0]
    bad_bg = sorted((src / "tau/TAU-urban-acoustic-scenes-2019-evaluation/audio").glob("*.wav"))[0]
    for bad in (bad_fg, bad_bg):
        bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
    (src / "fsd/FSDKaggle2018.audio_test" / sorted(p.name for p in bad_fg.parent.glob("*.wav"))[1]).unlink()
    opts = Options(recipe, src / "fsd", src / "tau", tmp_path / "out", ("test",), 2, jobs=1)
    summary = build(opts)
    skipped = {Path(p).name: reason for p, reason in summary.skipped_sources}
    assert bad_fg.name in skipped and "unreadable" in skipped[bad_fg.name]
    assert (bad_bg.name in skipped) == (recipe == "waveformer")  # dpm-tse draws backgrounds from development
    assert len(summary.missing_sources) == 1 and summary.per_split["test"] == 2 and not summary.failed
    specs = (tmp_path / "out").glob("specs/test/*.json") if recipe == "dpm-tse" else (tmp_path / "out").rglob("*.jams")
    assert all(bad_fg.name not in p.read_text() for p in specs)


def test_a_second_run_into_the_same_folder_is_refused(tmp_path_factory, tmp_path):
    ref = built_set(tmp_path_factory, "dpm-tse", count=3, stems=True)
    src = corpus(tmp_path_factory)
    out = copy_set(ref, tmp_path / "set")
    opts = Options("dpm-tse", src / "fsd", src / "tau", out, count=3, stems=True, cache_dir=ref / ".cache")
    (out / ".tse-mix.lock").write_text(str(os.getpid()))  # a live process holds it
    with pytest.raises(DataError, match=rf"another tse mix \(pid {os.getpid()}\) is writing this folder"):
        build(opts)
    (out / ".tse-mix.lock").write_text(str(2**22 + 1))  # beyond any pid: a dead run's lock is taken over
    assert build(opts).resumed == 9
    assert not (out / ".tse-mix.lock").exists()
