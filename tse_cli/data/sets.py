"""Torch datasets over rendered `tse mix` sets of either recipe (layouts in `tse_cli.data`'s docstring).

`open_set(root, split)` auto-detects the recipe and returns a `torch.utils.data.Dataset` whose items are dicts:

- `mixture`: (1, T) float32 tensor, `target`: (1, T) float32 tensor (the sum of the queried sources),
- `query`: (41,) float32 multi-hot over `tse_cli.classes.FSD_CLASSES`, `label`: int (first queried class),
- `sample_rate`: int, `onset` / `offset`: float seconds of the first queried source on the canvas,
- `name`: str (the mixture's file stem or folder), and for dpm-tse sets `reference`: (1, T) float32 (unless opened
  with `with_reference=False`).

Waveformer sets support multi-target queries: each item draws 1..`max_targets` of the mixture's labels with an
RNG seeded by (`seed`, epoch, index), so an epoch is reproducible whatever the worker order; call
`set_epoch(epoch)` before each epoch. dpm-tse sets have one target per mixture.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

from tse_cli.classes import FSD_CLASSES, class_index, multi_hot
from tse_cli.data import layout
from tse_cli.data.layout import SPLITS
from tse_cli.data.recipes import DPM_TSE, RECIPES, WAVEFORMER


class SetError(ValueError):
    """A rendered set that is missing or malformed; the message names the path and the problem."""


def detect_recipe(root: str | Path) -> str:
    """`"dpm-tse"` or `"waveformer"` for a rendered set folder (from `recipe.json`, else from its files)."""
    root = Path(root)
    if not root.is_dir():
        raise SetError(f"{root}: not a folder (expected a set made by `tse mix`)")
    info = root / layout.RECIPE_FILE
    if info.is_file():
        try:
            recipe = json.loads(info.read_text())["recipe"]
        except (ValueError, KeyError, TypeError) as err:
            raise SetError(f"{info}: malformed recipe.json ({err})") from None
        if recipe not in RECIPES:
            raise SetError(f"{info}: unknown recipe {recipe!r} (expected {' or '.join(RECIPES)})")
        return recipe
    if (root / layout.META_FILE).is_file():
        return DPM_TSE.name
    if layout.has_rendered_scenes(root):
        return WAVEFORMER.name
    raise SetError(f"{root}: no recipe.json, meta.csv or <split>/<n>/render.json (not a `tse mix` set)")


def _read_wav(path: Path, sample_rate: int) -> np.ndarray:
    """Mono float32 (T,) at the set's rate; raises SetError naming the file."""
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise SetError(f"{path}: unreadable ({err})") from None
    if rate != sample_rate:
        raise SetError(f"{path}: sample rate {rate} Hz, the set says {sample_rate} Hz")
    return data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]


# ---- dpm-tse ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _DpmRow:
    folder: str
    file: str
    cls: int
    onset: float
    offset: float


def _dpm_rows(root: Path, split: str) -> list[_DpmRow]:
    meta = root / layout.META_FILE
    if not meta.is_file():
        raise SetError(f"{meta}: missing (every dpm-tse set has one)")
    with meta.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in layout.META_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise SetError(f"{meta}: missing column(s) {', '.join(missing)}")
        rows = []
        for line, rec in enumerate(reader, start=2):
            if rec["subset"] != split:
                continue
            try:
                cls = float(rec["cls"])
                row = _DpmRow(rec["folder"], rec["file"], int(cls), float(rec["onset"]), float(rec["offset"]))
            except (TypeError, ValueError):
                raise SetError(f"{meta}:{line}: malformed row {rec}") from None
            if not 0 <= row.cls < len(FSD_CLASSES) or row.cls != cls:
                raise SetError(f"{meta}:{line}: cls {rec['cls']} is not a class index 0..{len(FSD_CLASSES) - 1}")
            rows.append(row)
    return rows


def _dpm_files(root: Path, row: _DpmRow) -> tuple[Path, Path, Path]:
    files = layout.dpm_row_audio(root, row.folder, row.file)
    return files["mixture"], files["target"], files["reference"]


# ---- waveformer -------------------------------------------------------------------------------------------------


def _scene_record(folder: Path) -> dict:
    path = folder / layout.RENDER_FILE
    try:
        record = json.loads(path.read_text())
        labels = record["labels"]
        events = record["events"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SetError(f"{path}: malformed render record ({err})") from None
    if not labels:
        raise SetError(f"{path}: no foreground labels")
    for label in labels:
        try:
            class_index(label)
        except ValueError as err:
            raise SetError(f"{path}: {err}") from None
    return {"labels": list(labels), "events": events}


# ---- validation -------------------------------------------------------------------------------------------------


def sample_rate(root: Path, recipe: str) -> int:
    """The sample rate of a rendered set of `recipe` (from its recipe.json, else the recipe's default)."""
    info = root / layout.RECIPE_FILE
    if info.is_file():
        try:
            return int(json.loads(info.read_text())["sample_rate"])
        except (ValueError, KeyError, TypeError) as err:
            raise SetError(f"{info}: malformed recipe.json ({err})") from None
    return RECIPES[recipe].sample_rate


def validate_set(root: str | Path, split: str) -> str:
    """Check that a rendered set has `split` and all its files; returns the recipe name.

    Raises `SetError` naming the first missing or malformed path (and how many more there are).
    """
    root = Path(root)
    if split not in SPLITS:
        raise SetError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    recipe = detect_recipe(root)
    sample_rate(root, recipe)
    missing: list[Path] = []
    if recipe == DPM_TSE.name:
        rows = _dpm_rows(root, split)
        if not rows:
            raise SetError(f"{root / layout.META_FILE}: no rows for split {split!r}")
        for row in rows:
            missing += [p for p in _dpm_files(root, row) if not p.is_file()]
    else:
        dirs = layout.rendered_scenes(root, split)
        if not dirs:
            raise SetError(f"{root / split}: no rendered scenes (<n>/render.json) for split {split!r}")
        for folder in dirs:
            record = _scene_record(folder)
            paths = [layout.scene_audio(folder, key) for key in [layout.MIXTURE, *record["labels"]]]
            missing += [p for p in paths if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise SetError(f"{missing[0]}: missing{more}")
    return recipe


# ---- datasets ---------------------------------------------------------------------------------------------------


class _SetBase(Dataset):
    """Shared epoch handling; subclasses fill `self.items` and implement `__getitem__`."""

    recipe: str

    def __init__(self, root: Path, split: str, sample_rate: int) -> None:
        self.root = root
        self.split = split
        self.sample_rate = sample_rate
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose multi-target draws `__getitem__` returns."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def _item(self, name: str, mixture, target, classes: list[int], onset: float, offset: float) -> dict:
        return {
            "mixture": torch.from_numpy(np.ascontiguousarray(mixture, dtype=np.float32))[None],
            "target": torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32))[None],
            "query": torch.from_numpy(multi_hot(classes)),
            "label": int(classes[0]),
            "sample_rate": self.sample_rate,
            "onset": float(onset),
            "offset": float(offset),
            "name": name,
        }


class DpmSet(_SetBase):
    """A dpm-tse set: one target per mixture, plus the same-class `reference` clip unless `with_reference` is
    False (training and evaluation do not use it: one WAV read less per item)."""

    recipe = DPM_TSE.name

    def __init__(self, root: Path, split: str, sample_rate: int, with_reference: bool = True) -> None:
        super().__init__(root, split, sample_rate)
        self.items = _dpm_rows(root, split)
        self.with_reference = with_reference

    def __getitem__(self, index: int) -> dict:
        row = self.items[index]
        mix, lab, ref = _dpm_files(self.root, row)
        item = self._item(
            mix.stem,
            _read_wav(mix, self.sample_rate),
            _read_wav(lab, self.sample_rate),
            [row.cls],
            row.onset,
            row.offset,
        )
        if self.with_reference:
            item["reference"] = torch.from_numpy(_read_wav(ref, self.sample_rate))[None]
        return item


class SceneSet(_SetBase):
    """A waveformer set: the target is the sum of the isolated events of 1..`max_targets` drawn labels."""

    recipe = WAVEFORMER.name

    def __init__(self, root: Path, split: str, sample_rate: int, max_targets: int, seed: int) -> None:
        super().__init__(root, split, sample_rate)
        if max_targets < 1:
            raise SetError(f"max_targets must be at least 1, got {max_targets}")
        self.max_targets = max_targets
        self.seed = seed
        self.items = layout.rendered_scenes(root, split)

    def draw_labels(self, labels: list[str], index: int) -> list[str]:
        """The labels queried for item `index` in the current epoch (deterministic per (seed, epoch, index))."""
        rng = np.random.default_rng([self.seed, self.epoch, index])
        k = int(rng.integers(1, min(self.max_targets, len(labels)) + 1))
        return [labels[i] for i in sorted(rng.choice(len(labels), size=k, replace=False))]

    def __getitem__(self, index: int) -> dict:
        folder = self.items[index]
        record = _scene_record(folder)
        chosen = self.draw_labels(record["labels"], index)
        mixture = _read_wav(layout.scene_audio(folder, layout.MIXTURE), self.sample_rate)
        target = np.zeros_like(mixture)
        for label in chosen:
            target += _read_wav(layout.scene_audio(folder, label), self.sample_rate)
        first = next((e for e in record["events"] if e.get("label") == chosen[0]), {})
        onset = float(first.get("onset", math.nan))
        offset = float(first.get("offset", math.nan))
        return self._item(folder.name, mixture, target, [class_index(lab) for lab in chosen], onset, offset)


def open_set(
    root: str | Path,
    split: str,
    *,
    max_targets: int = 1,
    seed: int = 0,
    validate: bool = True,
    with_reference: bool = True,
) -> DpmSet | SceneSet:
    """A `torch.utils.data.Dataset` over a rendered set (recipe auto-detected; see the module docstring).

    `max_targets` (waveformer sets): queries draw 1..max_targets of each mixture's labels (Waveformer's
    multi-target training uses 3). `validate`: check all files first (raises `SetError` naming what is wrong).
    `with_reference` (dpm-tse sets): also read each mixture's same-class reference clip.
    """
    root = Path(root)
    recipe = validate_set(root, split) if validate else detect_recipe(root)
    rate = sample_rate(root, recipe)
    if recipe == DPM_TSE.name:
        return DpmSet(root, split, rate, with_reference)
    return SceneSet(root, split, rate, max_targets, seed)
