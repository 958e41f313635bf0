"""Readers for FSD Kaggle 2018 and TAU Urban Acoustic Scenes 2019 in their downloaded layouts, with validation.

FSD Kaggle 2018 (Zenodo 2552860), `--fsd DIR` where DIR holds (directly or one level down)::

    FSDKaggle2018.audio_train/<fname>.wav
    FSDKaggle2018.audio_test/<fname>.wav
    FSDKaggle2018.meta/train_post_competition.csv                (fname,label,manually_verified,freesound_id,license)
    FSDKaggle2018.meta/test_post_competition_scoring_clips.csv   (fname,label,usage,freesound_id,license)

TAU Urban Acoustic Scenes 2019 (Zenodo 2589280 development, 3063822 evaluation), `--tau DIR` where DIR holds
(directly or one level down, or DIR is one of them)::

    TAU-urban-acoustic-scenes-2019-development/audio/<scene>-<city>-<loc>-<seg>-<device>.wav
    TAU-urban-acoustic-scenes-2019-development/meta.csv          (tab-separated: filename, scene_label, ...)
    TAU-urban-acoustic-scenes-2019-evaluation/audio/<n>.wav
    TAU-urban-acoustic-scenes-2019-evaluation/evaluation_setup/fold1_test.csv  (or meta.csv; column filename)

Metadata are authoritative: clips listed but absent are reported as missing (partial downloads), audio files not
listed are reported as extra and ignored. Any sample rate and channel count is accepted (decoding resamples and
averages channels). Errors raise `DataError` naming the file and what is wrong.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from tse_cli.classes import FSD_CLASSES
from tse_cli.errors import DataError

FSD_AUDIO = {"train": "FSDKaggle2018.audio_train", "test": "FSDKaggle2018.audio_test"}
FSD_META = "FSDKaggle2018.meta"
FSD_CSV = {"train": "train_post_competition.csv", "test": "test_post_competition_scoring_clips.csv"}
FSD_RECORD = "Zenodo record 2552860"
TAU_DIRS = {
    "development": "TAU-urban-acoustic-scenes-2019-development",
    "evaluation": "TAU-urban-acoustic-scenes-2019-evaluation",
}
TAU_RECORD = {"development": "Zenodo record 2589280", "evaluation": "Zenodo record 3063822"}


@dataclass(frozen=True)
class Clip:
    """One source file: `fname` (file name), `label` (FSD class or TAU scene), `subset` (train/test, dev/eval)."""

    path: Path
    fname: str
    label: str
    subset: str


@dataclass
class Corpus:
    """Clips per subset, plus what the metadata lists but the folders lack, and unlisted audio files."""

    root: Path
    clips: dict[str, list[Clip]]
    missing: list[Path] = field(default_factory=list)
    extra: list[Path] = field(default_factory=list)

    def by_name(self) -> dict[str, Clip]:
        """All clips by file name (for resolving specifications written elsewhere)."""
        return {c.fname: c for clips in self.clips.values() for c in clips}


def _locate(root: Path, name: str) -> Path | None:
    """`root/name`, or `root/*/name` (one level down), or `root` itself when it is named `name`."""
    if root.name == name and root.is_dir():
        return root
    direct = root / name
    if direct.is_dir():
        return direct
    below = sorted(p for p in root.glob(f"*/{name}") if p.is_dir())
    return below[0] if below else None


def _read_table(path: Path, columns: tuple[str, ...], delimiter: str) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV with a header, as (line number, row); DataError when columns are missing."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh, delimiter=delimiter)
            header = reader.fieldnames or []
            missing = [c for c in columns if c not in header]
            if missing:
                sep = "tab" if delimiter == "\t" else repr(delimiter)
                raise DataError(
                    f"{path}: missing column(s) {', '.join(missing)} ({sep}-separated header expected, "
                    f"found {','.join(header) or 'nothing'})"
                )
            return [(line, row) for line, row in enumerate(reader, start=2)]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: unreadable ({err})") from None


def _listed_clips(
    table: Path, audio: Path, subset: str, rows: list[tuple[int, dict[str, str]]], label_key: str | None
) -> Corpus:
    """Match metadata rows against the audio folder."""
    on_disk = {p.name: p for p in audio.iterdir() if p.suffix.lower() == ".wav"}
    clips: list[Clip] = []
    missing: list[Path] = []
    seen: set[str] = set()
    for line, row in rows:
        fname = Path((row.get("fname") or row.get("filename") or "").strip()).name
        if not fname:
            raise DataError(f"{table}:{line}: empty file name")
        if fname in seen:
            continue
        seen.add(fname)
        label = (row.get(label_key) or "").strip() if label_key else ""
        if fname in on_disk:
            clips.append(Clip(on_disk[fname], fname, label, subset))
        else:
            missing.append(audio / fname)
    extra = sorted(p for name, p in on_disk.items() if name not in seen)
    return Corpus(audio, {subset: clips}, missing, extra)


def _require_dir(path: Path | None, what: str, where: Path, hint: str) -> Path:
    if path is None:
        raise DataError(f"{where}: no {what} folder found ({hint})")
    return path


def read_fsd(root: str | Path, subsets: tuple[str, ...] = ("train", "test")) -> Corpus:
    """FSD Kaggle 2018 clips for `subsets` (`train`: train_post_competition; `test`: the 1,600 scored clips)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: FSD Kaggle 2018 folder does not exist")
    meta = _require_dir(_locate(root, FSD_META), FSD_META, root, f"download FSDKaggle2018.meta.zip, {FSD_RECORD}")
    out = Corpus(root, {})
    for subset in subsets:
        table = meta / FSD_CSV[subset]
        if not table.is_file():
            raise DataError(f"{table}: missing ({FSD_META}.zip from {FSD_RECORD})")
        audio = _require_dir(
            _locate(root, FSD_AUDIO[subset]), FSD_AUDIO[subset], root, f"download {FSD_AUDIO[subset]}.zip, {FSD_RECORD}"
        )
        rows = _read_table(table, ("fname", "label"), ",")
        for line, row in rows:
            if row["label"] not in FSD_CLASSES:
                raise DataError(f"{table}:{line}: unknown label {row['label']!r} (not one of the 41 FSD classes)")
        part = _listed_clips(table, audio, subset, rows, "label")
        if rows and not part.clips[subset]:
            raise DataError(f"{audio}: none of the {len(rows)} clips listed in {table.name} are there")
        out.clips[subset] = part.clips[subset]
        out.missing += part.missing
        out.extra += part.extra
    return out


def read_tau(root: str | Path, subsets: tuple[str, ...] = ("development",)) -> Corpus:
    """TAU Urban Acoustic Scenes 2019 clips for `subsets` (`development`, `evaluation`); labels are scenes."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: TAU Urban Acoustic Scenes 2019 folder does not exist")
    out = Corpus(root, {})
    for subset in subsets:
        name = TAU_DIRS[subset]
        folder = _require_dir(_locate(root, name), name, root, f"download it from {TAU_RECORD[subset]}")
        audio = folder / "audio"
        if not audio.is_dir():
            raise DataError(f"{audio}: missing (unzip the {name}.audio.*.zip files into {folder})")
        candidates = [folder / "meta.csv", folder / "evaluation_setup" / "fold1_test.csv"]
        table = next((p for p in candidates if p.is_file()), None)
        if table is None or (subset == "development" and table != candidates[0]):
            raise DataError(f"{candidates[0]}: missing ({name}.meta.zip from {TAU_RECORD[subset]})")
        rows = _read_table(table, ("filename",), "\t")
        part = _listed_clips(table, audio, subset, rows, "scene_label" if subset == "development" else None)
        if not part.clips[subset]:
            raise DataError(f"{audio}: none of the {len(rows)} files listed in {table.name} are there")
        out.clips[subset] = part.clips[subset]
        out.missing += part.missing
        out.extra += part.extra
    return out
