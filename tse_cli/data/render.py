"""Rendering one mixture into a set: its audio files, then its render record, written last (a mixture is
finished once its record exists), with optional peak normalisation; and reading a record back.

Sources come through a loader (`dpm.Loader` / `scenes.Loader`) over the worker's decoded-source cache.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tse_cli.atomic import write_json
from tse_cli.data import dpm, layout, scenes
from tse_cli.data.wavio import write_wav

PEAK = 0.99  # --normalize scales a mixture whose peak exceeds this down to it


@dataclass
class Result:
    """One mixture's outcome."""

    split: str
    name: str
    labels: list[str] = field(default_factory=list)  # target first (dpm-tse) / scene labels (waveformer)
    peak: float = 0.0
    clipped: int = 0  # samples at or beyond full scale as written
    gain: float = 1.0
    existing: bool = False  # already done before this run
    error: str | None = None


def normalize(arrays: dict[str, np.ndarray], enabled: bool, keep: Iterable[str] = ()) -> tuple[float, float, int]:
    """Scale all arrays but `keep` by one gain when the mixture would clip; (gain, peak before, clipped samples).

    Scaled down, the mixture peaks at `PEAK`: only a mixture written as it is, with a peak of 1 or more, has
    samples at or beyond full scale to count."""
    mixture = arrays["mixture"]
    peak = float(np.maximum(mixture.max(), -mixture.min()))
    gain = PEAK / peak if enabled and peak > PEAK else 1.0
    if gain != 1.0:
        for key in arrays:
            if key not in keep:
                arrays[key] = arrays[key] * gain
        return gain, peak, 0
    return gain, peak, int(np.count_nonzero(np.abs(mixture) >= 1.0)) if peak >= 1.0 else 0


def render_dpm_spec(spec: dict, out: Path, normalize_peak: bool, stems: bool, load: dpm.Loader) -> Result:
    """Render a dpm-tse specification into the set at `out` and write its done record."""
    arrays = dpm.render(spec, load)
    gain, peak, clipped = normalize(arrays, normalize_peak, keep=("reference",))
    split, name = spec["split"], spec["name"]
    files = layout.dpm_audio(out, split, name)
    files["mixture"].parent.mkdir(parents=True, exist_ok=True)
    for key, path in files.items():
        write_wav(path, arrays[key], spec["sample_rate"])
    if stems:
        for key in ["background"] + [f"int{k}" for k in range(1, len(spec["interferers"]) + 1)]:
            path = layout.dpm_stem(out, split, name, key)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_wav(path, arrays[key], spec["sample_rate"])
    target = spec["target"]
    labels = [target["label"]] + [s["label"] for s in spec["interferers"]]
    record = {
        "name": name,
        "subset": split,
        "folder": split,
        "file": files["mixture"].name,
        "cls": float(target["cls"]),
        "onset": target["onset"],
        "offset": target["offset"],
        "labels": labels,
        "peak": peak,
        "clipped_samples": clipped,
        "normalize_gain": gain,
    }
    write_json(layout.dpm_done(out, split, name), record)
    return Result(split, name, labels, peak, clipped, gain)


def render_scene(scene: scenes.Scene, folder: Path, split: str, normalize_peak: bool, load: scenes.Loader) -> Result:
    """Render a scene into `folder` (mixture.wav, background.wav, <Label>.wav, render.json written last)."""
    arrays, events = scenes.render(scene, load)
    gain, peak, clipped = normalize(arrays, normalize_peak)
    folder.mkdir(parents=True, exist_ok=True)
    for key, audio in arrays.items():
        write_wav(layout.scene_audio(folder, key), audio, scene.sample_rate)
    for e in events:
        e["gain"] *= gain
    record = {
        "labels": scene.labels,
        "events": events,
        "sample_rate": scene.sample_rate,
        "peak": peak,
        "clipped_samples": clipped,
        "normalize_gain": gain,
    }
    write_json(folder / layout.RENDER_FILE, record)
    return Result(split, folder.name, scene.labels, peak, clipped, gain)


def existing_result(record: Path, split: str, name: str) -> Result:
    """The result of a mixture finished earlier, from its render record."""
    rec = json.loads(record.read_text())
    return Result(split, name, rec["labels"], rec["peak"], rec["clipped_samples"], rec["normalize_gain"], existing=True)


def write_dpm_meta(out: Path) -> int:
    """Rewrite `out/meta.csv` from the done records of every split (in numbered order); returns its rows."""
    rows = []
    for split in layout.SPLITS:
        for name in layout.dpm_done_names(out, split):
            r = json.loads(layout.dpm_done(out, split, name).read_text())
            rows.append([r[column] for column in layout.META_COLUMNS])
    layout.write_meta(out, rows)
    return len(rows)
