"""Where a rendered set keeps what: the one owner of split names, file and folder names, `meta.csv` columns and
`recipe.json`, for what `tse mix` writes, what `open_set` reads and what tests build by hand.

The layouts are drawn in `tse_cli.data`'s docstring. Paths are built from a set root `root`, a split (one of
`SPLITS`) and a mixture name (`dpm_name` / `scene_name`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from pathlib import Path

from tse_cli.atomic import write_json, write_text

SPLITS = ("train", "val", "test")
RECIPE_FILE = "recipe.json"
CACHE_DIR = ".cache"  # decoded sources, unless --cache-dir says otherwise
LOCK_FILE = ".tse-mix.lock"

# ---- dpm-tse: OUT/<split>/<split>_<n>{,_lab,_re}.wav, OUT/meta.csv, OUT/specs/<split>/<split>_<n>{.json,.done.json}

META_FILE = "meta.csv"
META_COLUMNS = ("subset", "folder", "file", "cls", "onset", "offset")  # what the published DPM-TSE loader reads
DPM_SUFFIXES = {"mixture": "", "target": "_lab", "reference": "_re"}  # audio file name = <name><suffix>.wav
DONE_SUFFIX = ".done.json"


def dpm_name(split: str, index: int) -> str:
    """The name of mixture `index` (0-based) of a split: `<split>_<index + 1>`."""
    return f"{split}_{index + 1}"


def dpm_number(name: str) -> int:
    """The 1-based number in a dpm-tse mixture name (the order of meta.csv rows)."""
    return int(name.rsplit("_", 1)[1])


def dpm_audio(root: Path, folder: str, name: str) -> dict[str, Path]:
    """`mixture`, `target` and `reference` files of a mixture (`folder` is its split, or a meta.csv `folder`)."""
    return {key: root / folder / f"{name}{suffix}.wav" for key, suffix in DPM_SUFFIXES.items()}


def dpm_row_audio(root: Path, folder: str, file: str) -> dict[str, Path]:
    """The files of the mixture a meta.csv row names by its `folder` and `file` (the mixture's file name)."""
    return dpm_audio(root, folder, Path(file).stem)


def dpm_stem(root: Path, split: str, name: str, key: str) -> Path:
    """A `--stems` file: `key` is `background` or `int1`..`int3`."""
    return root / "stems" / split / f"{name}_{key}.wav"


def dpm_spec(root: Path, split: str, name: str) -> Path:
    """A mixture's specification (written before its audio)."""
    return root / "specs" / split / f"{name}.json"


def dpm_done(root: Path, split: str, name: str) -> Path:
    """A mixture's render record (written last: the mixture is finished once it exists)."""
    return root / "specs" / split / f"{name}{DONE_SUFFIX}"


def dpm_done_names(root: Path, split: str) -> list[str]:
    """Names of the finished mixtures of a split, in their numbered order."""
    folder = root / "specs" / split
    names = [p.name[: -len(DONE_SUFFIX)] for p in folder.glob(f"*{DONE_SUFFIX}")] if folder.is_dir() else []
    return sorted(names, key=dpm_number)


def meta_text(rows: Iterable[Iterable[object]]) -> str:
    """`meta.csv` contents: the header `META_COLUMNS`, then one row per mixture (values in that order)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(META_COLUMNS)
    writer.writerows(rows)
    return buf.getvalue()


def write_meta(root: Path, rows: Iterable[Iterable[object]]) -> None:
    """Write `root/meta.csv` atomically (see `meta_text`)."""
    write_text(root / META_FILE, meta_text(rows))


# ---- waveformer: OUT/jams/<split>/<n>/{mixture.jams,gt_events.csv}, OUT/<split>/<n>/{mixture,<Label>,...}.wav

JAMS_FILE = "mixture.jams"
GT_EVENTS_FILE = "gt_events.csv"
RENDER_FILE = "render.json"  # written last: the scene is finished once it exists
MIXTURE = "mixture"
BACKGROUND = "background"


def scene_name(index: int) -> str:
    """The folder name of scene `index` (0-based): five digits."""
    return f"{index:05d}"


def scene_spec_dir(root: Path, split: str, name: str) -> Path:
    """Where a scene's `.jams` specification and gt_events.csv go (the authors' FSDSoundScapes layout)."""
    return root / "jams" / split / name


def scene_dir(root: Path, split: str, name: str) -> Path:
    """Where a scene's audio and render record go."""
    return root / split / name


def scene_audio(folder: Path, key: str) -> Path:
    """A scene's audio file: `key` is `mixture`, `background` or a foreground label."""
    return folder / f"{key}.wav"


def rendered_scenes(root: Path, split: str) -> list[Path]:
    """The finished scene folders of a split (those with a render record), sorted."""
    folder = root / split
    return sorted(p.parent for p in folder.glob(f"*/{RENDER_FILE}")) if folder.is_dir() else []


def has_rendered_scenes(root: Path) -> bool:
    """Whether `root` holds any finished scene (how a set without recipe.json is recognised as waveformer)."""
    return any(root.glob(f"*/*/{RENDER_FILE}"))


def split_of(path: Path) -> str:
    """The split a specification path belongs to (its nearest folder named after one); ValueError otherwise."""
    for part in reversed(path.parts[:-1]):
        if part in SPLITS:
            return part
    raise ValueError(f"{path}: no {'/'.join(SPLITS)} folder in its path (cannot tell its split)")


# ---- recipe.json: {"recipe", "sample_rate", "seed", "normalize", "splits": {split: size}} -----------------------


def read_info(root: Path) -> dict | None:
    """The parsed `recipe.json` of a set, None when there is none; ValueError (JSON) when malformed."""
    path = root / RECIPE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def update_info(root: Path, recipe: str, sample_rate: int, **extra: object) -> None:
    """Write `recipe.json`, keeping what it said before and merging the split sizes in `extra["splits"]`."""
    old = read_info(root) or {}
    sizes = {**old.get("splits", {}), **extra.pop("splits", {})}
    write_json(root / RECIPE_FILE, {**old, "recipe": recipe, "sample_rate": sample_rate, **extra, "splits": sizes})
