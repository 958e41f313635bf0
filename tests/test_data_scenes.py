"""The Waveformer recipe: Scaper-compatible .jams specs, loudness-based SNRs measured back, the published layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_data_common import built_set, copy_set, corpus, tree_bytes

from tse_cli.classes import FSD_CLASSES
from tse_cli.data import scenes
from tse_cli.data.build import Options, build
from tse_cli.data.loudness import scaper_lufs
from tse_cli.data.rerender import render_jams_tree, render_spec
from tse_cli.data.sources import read_fsd

SR = scenes.SAMPLE_RATE
SCENE_SAMPLES = 264600  # 6 s at 44.1 kHz, as the published sample


def _scene_dirs(root: Path, split: str) -> list[Path]:
    return sorted((root / split).glob("*/render.json"))


def test_scene_files_and_labels(tmp_path_factory):
    root = built_set(tmp_path_factory, "waveformer", count=2)
    for split in ("train", "val", "test"):
        records = _scene_dirs(root, split)
        assert [p.parent.name for p in records] == ["00000", "00001"]
        for rec_path in records:
            folder, rec = rec_path.parent, json.loads(rec_path.read_text())
            labels = rec["labels"]
            assert 3 <= len(labels) <= 5 and len(set(labels)) == len(labels) and set(labels) <= set(FSD_CLASSES)
            spec = folder.parents[1] / "jams" / split / folder.name
            gt = (spec / "gt_events.csv").read_text().splitlines()
            assert gt[0].split("\t")[0] == "label" and [row.split("\t")[0] for row in gt[1:]] == labels
            mix, rate = sf.read(str(folder / "mixture.wav"))
            assert rate == SR and mix.shape == (SCENE_SAMPLES,)
            parts = sf.read(str(folder / "background.wav"))[0] + sum(
                sf.read(str(folder / f"{x}.wav"))[0] for x in labels
            )
            np.testing.assert_allclose(mix, parts, atol=(len(labels) + 2) / 32768)
            scene = scenes.read_jams(spec / "mixture.jams")
            assert scene.labels == labels and scene.sample_rate == SR and scene.duration == 6.0
            bg = scene.events[0].source_file
            assert ("evaluation" in bg) == (split == "test")
            fg_dirs = {Path(e.source_file).parent.name for e in scene.foreground}
            assert fg_dirs == {"FSDKaggle2018.audio_test" if split == "test" else "FSDKaggle2018.audio_train"}
            for e in scene.foreground:
                assert scenes.is_val_clip(Path(e.source_file).name) == (split == "val") or split == "test"
                assert e.event_time >= 0 and e.event_time + e.event_duration <= 6.0 + 1e-6
                assert 15 <= e.snr <= 25


def test_snrs_measured_back_in_lufs(tmp_path_factory, tmp_path):
    root = built_set(tmp_path_factory, "waveformer", count=2)
    checked = 0
    for split in ("train", "test"):
        spec = json.loads((root / "jams" / split / "00001" / "mixture.jams").read_text())
        box = spec["annotations"][0]["sandbox"]["scaper"]
        box["fade_in_len"] = box["fade_out_len"] = 0.0  # fades change loudness; Scaper sets gains before them
        box["fix_clipping"] = False
        path = tmp_path / "jams" / split / "00001" / "mixture.jams"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(spec))
        _, folder = render_spec(path, None, None, tmp_path / "out", None)
        rec = json.loads((folder / "render.json").read_text())
        bg = sf.read(str(folder / "background.wav"))[0]
        assert scaper_lufs(bg, SR) == pytest.approx(scenes.REF_DB, abs=0.1)
        for e in rec["events"]:
            audio = sf.read(str(folder / f"{e['label']}.wav"))[0]
            part = audio[round(e["onset"] * SR) : round(e["offset"] * SR)]
            assert not audio[: round(e["onset"] * SR)].any() and not audio[round(e["offset"] * SR) :].any()
            measured = scaper_lufs(part, SR) - scaper_lufs(bg, SR)
            assert measured == pytest.approx(e["snr"], abs=0.1)
            checked += 1
    assert checked >= 6


def test_jams_round_trip_and_column_form(tmp_path_factory, tmp_path):
    root = built_set(tmp_path_factory, "waveformer", count=2)
    path = root / "jams" / "val" / "00000" / "mixture.jams"
    scene = scenes.read_jams(path)
    doc = scenes.to_jams(scene)
    assert doc == json.loads(path.read_text())
    ann = doc["annotations"][0]
    assert ann["namespace"] == "scaper" and ann["sandbox"]["scaper"]["sr"] == SR
    assert doc["sandbox"]["tse"] == {"recipe": "waveformer", "split": "val", "index": 0, "seed": 0}
    rows = ann["data"]
    ann["data"] = {key: [r[key] for r in rows] for key in rows[0]}  # JAMS' column-wise serialisation
    other = tmp_path / "col.jams"
    other.write_text(json.dumps(doc))
    assert scenes.read_jams(other).events == scene.events


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(annotations=[]), "no scaper annotation"),
        (lambda d: d["annotations"][0]["data"][1]["value"].update(pitch_shift=2.0), "pitch shifting"),
        (lambda d: d["annotations"][0]["data"][1]["value"].update(label="Whistle"), "unknown class 'Whistle'"),
        (lambda d: d["annotations"][0]["data"].pop(0), "no background event"),
        (lambda d: d["annotations"][0]["sandbox"]["scaper"].pop("sr"), "'sr'"),
    ],
)
def test_malformed_jams_is_named(tmp_path_factory, tmp_path, edit, message):
    root = built_set(tmp_path_factory, "waveformer", count=2)
    doc = json.loads((root / "jams" / "val" / "00000" / "mixture.jams").read_text())
    edit(doc)
    path = tmp_path / "bad.jams"
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=rf"bad.jams: not a readable Scaper .jams specification .*{message}"):
        scenes.read_jams(path)


def test_jobs_do_not_change_a_byte(tmp_path_factory, tmp_path):
    ref = built_set(tmp_path_factory, "waveformer", count=2)
    src = corpus(tmp_path_factory)
    out = tmp_path / "two"
    summary = build(Options("waveformer", src / "fsd", src / "tau", out, count=2, jobs=2))
    assert summary.rendered == 6 and not summary.failed
    assert tree_bytes(out) == tree_bytes(ref)
    assert tree_bytes(out, "*.jams") == tree_bytes(ref, "*.jams")


def _publish(ref: Path, dst: Path) -> Path:
    """Our spec tree rewritten as the authors' FSDSoundScapes archive: their absolute paths, their layout."""
    for path in sorted(ref.glob("jams/*/*/mixture.jams")):
        doc = json.loads(path.read_text())
        doc["sandbox"] = {}
        for obs in doc["annotations"][0]["data"]:
            v = obs["value"]
            name = Path(v["source_file"]).name
            if v["role"] == "background":
                v["source_file"] = f"/mnt/authors/TAU-acoustic-sounds/TAU-urban-acoustic-scenes-2019/audio/{name}"
            else:
                v["source_file"] = f"/mnt/authors/FSDKaggle2018/train/{v['label']}/{name}"
        out = dst / "jams" / path.parts[-3] / path.parts[-2] / "mixture.jams"
        out.parent.mkdir(parents=True)
        out.write_text(json.dumps(doc))
    return dst / "jams"


def _resorted_fsd(src: Path, dst: Path) -> Path:
    """The authors' re-sorted copy of FSD: FSDKaggle2018/{train,test}/<label>/<file>.wav (symlinks here)."""
    for subset in ("train", "test"):
        for clip in read_fsd(src / "fsd", (subset,)).clips[subset]:
            link = dst / "FSDKaggle2018" / subset / clip.label / clip.fname
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(clip.path)
    return dst


def test_render_published_jams_tree_from_user_copies(tmp_path_factory, tmp_path):
    ref = built_set(tmp_path_factory, "waveformer", count=2)
    src = corpus(tmp_path_factory)
    jams = _publish(ref, tmp_path / "FSDSoundScapes")
    out = tmp_path / "rendered"
    fsd = _resorted_fsd(src, tmp_path / "authors")
    summary = render_jams_tree(jams, out, fsd, src / "tau", jobs=1, normalize=None)
    assert summary.rendered == 6 and not summary.failed
    assert tree_bytes(out) == tree_bytes(ref)
    assert json.loads((out / "recipe.json").read_text())["recipe"] == "waveformer"
    again = render_jams_tree(jams, out, fsd, src / "tau", jobs=1, normalize=None)
    assert (again.rendered, again.resumed) == (0, 6)


def test_missing_sources_fail_that_scene_with_its_name(tmp_path_factory, tmp_path):
    ref = built_set(tmp_path_factory, "waveformer", count=2)
    jams = _publish(ref, tmp_path / "FSDSoundScapes")
    summary = render_jams_tree(jams, tmp_path / "out", None, None, jobs=1, normalize=None)
    assert len(summary.failed) == 6 and summary.rendered == 0
    assert "/mnt/authors/" in summary.failed[0].error and "source file not found" in summary.failed[0].error


def test_resume_after_partial_scene(tmp_path_factory, tmp_path):
    ref = built_set(tmp_path_factory, "waveformer", count=2)
    src = corpus(tmp_path_factory)
    out = copy_set(ref, tmp_path / "set")
    (out / "test" / "00001" / "render.json").unlink()
    next(iter((out / "test" / "00001").glob("[A-Z]*.wav"))).unlink()
    summary = build(Options("waveformer", src / "fsd", src / "tau", out, count=2, jobs=1))
    assert (summary.rendered, summary.resumed) == (1, 5)
    assert tree_bytes(out) == tree_bytes(ref)
