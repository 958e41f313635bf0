"""The Waveformer authors' experiment folders (their experiments.zip): finding a run and picking its best epoch.

Their training script writes one torch file per epoch into the experiment's folder, `<exp>/<N>.pt`, each holding
`val_metrics`: every metric's validation value for epochs 0..N so far (lists). Their eval.py takes the highest
epoch's file, finds the first epoch with the highest value of the config's `base_metric` (SI-SNRi,
`scale_invariant_signal_noise_ratio`) and loads `<exp>/<best>.pt`; the model's arguments are in
`<exp>/config.json` (their repository's experiments/<exp>/config.json; experiments.zip is unzipped over those
folders). `select_epoch` does the same on a folder (one experiment, or a folder of them) or on the zip itself,
copying the members it needs out of the archive, and hands back the checkpoint and config files for
`tse_cli.models.waveformer.load_published`. The torch files are read with `weights_only=True` only
(`tse_cli.models.published.read_torch_file`, which allows the numpy scalars the metrics were saved as).
"""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from tse_cli.models.published import PublishedFormatError, read_torch_file

DEFAULT_METRIC = "scale_invariant_signal_noise_ratio"  # their configs' base_metric
_EPOCH_FILE = re.compile(r"(\d+)\.pt")


@dataclass
class Experiment:
    """One experiment of a folder or zip `source`: `name` (its folder's name), `epochs` (epoch -> file path, or
    member name in the zip) and `config` (its config.json, None when the folder has none)."""

    source: Path
    name: str
    epochs: dict[int, str] = field(default_factory=dict)
    config: str | None = None


@dataclass(frozen=True)
class Selection:
    """The epoch chosen from an experiment: local files for `load_published` and why this epoch.

    `metric`/`value`: the validation metric the choice was made by and its value at `epoch` (None when the
    epoch was asked for and the highest epoch's file was not read)."""

    experiment: str
    epoch: int
    last_epoch: int
    checkpoint: Path
    config: Path
    metric: str
    value: float | None

    def describe(self) -> dict[str, Any]:
        """What a converted checkpoint records about its origin (`converted_from`)."""
        info: dict[str, Any] = {"experiment": self.experiment, "epoch": self.epoch, "epochs": self.last_epoch + 1}
        return info | ({f"val_{self.metric}": self.value} if self.value is not None else {})


def find_experiments(source: Path) -> dict[str, Experiment]:
    """Every experiment in `source`: a folder holding `<N>.pt` files, a folder of such folders (any depth), or a
    zip of them; by name. `PublishedFormatError` when `source` holds none."""
    if zipfile.is_zipfile(source):
        try:
            with zipfile.ZipFile(source) as archive:
                names = [info.filename for info in archive.infolist() if not info.is_dir()]
        except (OSError, zipfile.BadZipFile) as err:
            raise PublishedFormatError(f"{source}: not a readable zip ({err})") from None
    elif source.is_dir():
        names = [str(p.relative_to(source).as_posix()) for p in sorted(source.rglob("*")) if p.is_file()]
    else:
        raise PublishedFormatError(f"{source}: not a folder or zip of the authors' experiments")
    by_folder: dict[str, Experiment] = {}
    for name in names:
        path = PurePosixPath(name)
        folder = str(path.parent)
        match = _EPOCH_FILE.fullmatch(path.name)
        if match is None and path.name != "config.json":
            continue
        experiment = by_folder.setdefault(folder, Experiment(source, _folder_name(source, path)))
        if match is not None:
            experiment.epochs[int(match[1])] = name
        else:
            experiment.config = name
    found = [e for e in by_folder.values() if e.epochs]
    if not found:
        raise PublishedFormatError(f"{source}: no experiment in it (no <exp>/<epoch>.pt files)")
    experiments: dict[str, Experiment] = {}
    for experiment in found:
        if experiment.name in experiments:
            raise PublishedFormatError(f"{source}: two experiments are named {experiment.name}")
        experiments[experiment.name] = experiment
    return experiments


def _folder_name(source: Path, member: PurePosixPath) -> str:
    """An experiment's name: its folder's, or for epoch files directly in a folder `source`, the folder's own."""
    return member.parent.name or source.resolve().name


def choose(experiments: dict[str, Experiment], name: str | None, source: Path) -> Experiment:
    """The experiment `name`, or the only one; `PublishedFormatError` naming the choices otherwise."""
    if name is None and len(experiments) == 1:
        return next(iter(experiments.values()))
    if name in experiments:
        return experiments[name]
    names = ", ".join(sorted(experiments))
    what = f"no experiment {name!r}" if name else f"{len(experiments)} experiments"
    raise PublishedFormatError(f"{source}: {what}; choose one with --experiment ({names})")


def select_epoch(
    source: Path,
    workdir: Path,
    experiment: str | None = None,
    epoch: int | None = None,
    config: Path | None = None,
) -> Selection:
    """The checkpoint the authors' eval.py would load from `source` (a folder or zip, `find_experiments`), or
    epoch `epoch` when given, with the experiment's config.json (or `config`, which takes precedence).

    Files inside a zip are copied to `workdir` (which the caller deletes). `PublishedFormatError`, one line naming
    the file, for a missing epoch or config, and for a metric the highest epoch's file does not hold.
    """
    run = choose(find_experiments(source), experiment, source)
    last = max(run.epochs)
    where = f"{source}: experiment {run.name}"
    if config is None:
        if run.config is None:
            raise PublishedFormatError(
                f"{where} has no config.json; pass --config (their experiments/<exp>/config.json)"
            )
        config = _local(run, run.config, workdir)
    metric = _base_metric(config)
    value = None
    if epoch is None:
        epoch, value = best_epoch(_local(run, run.epochs[last], workdir), metric)
    if epoch not in run.epochs:
        raise PublishedFormatError(f"{where} has no {epoch}.pt (epochs {min(run.epochs)}..{last} present)")
    return Selection(run.name, epoch, last, _local(run, run.epochs[epoch], workdir), config, metric, value)


def best_epoch(last_checkpoint: Path, metric: str) -> tuple[int, float]:
    """The first epoch with the highest validation `metric` in an epoch file's `val_metrics`, and that value."""
    checkpoint = read_torch_file(last_checkpoint)
    metrics = checkpoint.get("val_metrics") if isinstance(checkpoint, dict) else None
    if not isinstance(metrics, dict):
        raise PublishedFormatError(f"{last_checkpoint}: no val_metrics in this checkpoint")
    values = metrics.get(metric)
    if not isinstance(values, list | tuple) or not values:
        known = ", ".join(sorted(map(str, metrics))) or "none"
        raise PublishedFormatError(f"{last_checkpoint}: val_metrics has no {metric} values (it has: {known})")
    scores = [float(v) for v in values]
    best = max(range(len(scores)), key=scores.__getitem__)
    return best, scores[best]


def _base_metric(config: Path) -> str:
    """The config's `base_metric` (their eval.py's choice), `DEFAULT_METRIC` when it names none."""
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return DEFAULT_METRIC  # load_published reports an unreadable config, naming it
    metric = data.get("base_metric") if isinstance(data, dict) else None
    return metric if isinstance(metric, str) and metric else DEFAULT_METRIC


def _local(run: Experiment, name: str, workdir: Path) -> Path:
    """A file of `run` on disk: the file itself in a folder, or a copy of the zip member in `workdir`."""
    if run.source.is_dir():
        return run.source / name
    target = workdir / run.name / PurePosixPath(name).name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with zipfile.ZipFile(run.source) as archive, archive.open(name) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except (OSError, zipfile.BadZipFile) as err:
            raise PublishedFormatError(f"{run.source}: cannot read {name} ({err})") from None
    return target
