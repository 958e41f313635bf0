"""Re-render existing specifications: one `.json` (dpm-tse) or `.jams` (waveformer) file, or a tree of Scaper
`.jams` specs such as the authors' published FSDSoundScapes (`tse mix render`).

Sources are found where the specification says, or by file name under the user's FSD/TAU folders (any layout:
the downloads, or the authors' re-sorted `FSDKaggle2018/<split>/<label>/`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tse_cli.atomic import remove_stale, write_json
from tse_cli.data import dpm, layout, scenes
from tse_cli.data.build import Summary, run_into
from tse_cli.data.lock import FolderLock
from tse_cli.data.recipes import DPM_TSE, WAVEFORMER, DpmLoader
from tse_cli.data.render import Result, render_dpm_spec, render_scene, write_dpm_meta
from tse_cli.data.sources import Clip
from tse_cli.data.wavio import SourceCache
from tse_cli.data.workers import Context, Task
from tse_cli.errors import DataError


def _names(fsd: Path | None, tau: Path | None) -> dict[str, Clip] | None:
    """File name -> clip for every audio file under the user's FSD/TAU folders (for resolving specs written
    elsewhere)."""
    if fsd is None and tau is None:
        return None
    names: dict[str, Clip] = {}
    for root in (fsd, tau):
        if root is None:
            continue
        if not root.is_dir():
            raise DataError(f"{root}: folder does not exist")
        for path in sorted(root.rglob("*.wav")):
            names.setdefault(path.name, Clip(path, path.name, "", ""))
    if not names:
        raise DataError(f"no .wav files under {' or '.join(str(r) for r in (fsd, tau) if r is not None)}")
    return names


def _cache_for(root: Path, sample_rate: int) -> SourceCache:
    """The source cache of the set at `root` (on disk when the set has one)."""
    folder = root / layout.CACHE_DIR
    return SourceCache(sample_rate, folder if folder.is_dir() else None)


def render_spec(
    spec_path: Path, fsd: Path | None, tau: Path | None, out: Path | None, normalize: bool | None
) -> tuple[Result, Path]:
    """Re-render one specification (`.json` dpm-tse or `.jams` scene); returns the result and where it went.

    Our own specs go back where their set has them (`OUT/specs/<split>/x.json` -> `OUT/<split>/`,
    `OUT/jams/<split>/<n>/mixture.jams` -> `OUT/<split>/<n>/`) unless `out` says otherwise.
    """
    names = _names(fsd, tau)
    split = layout.split_of(spec_path)
    if spec_path.suffix == ".jams":
        root = out if out is not None else spec_path.parents[3]
        folder = layout.scene_dir(root, split, spec_path.parent.name)
        scene = scenes.resolve(scenes.read_jams(spec_path), names)
        cache = _cache_for(root, scene.sample_rate)
        result = render_scene(scene, folder, split, scene.fix_clipping if normalize is None else normalize, cache.get)
        layout.update_info(root, WAVEFORMER.name, scene.sample_rate)
        return result, folder
    try:
        spec = json.loads(spec_path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{spec_path}: not a readable specification ({err})") from None
    root = out if out is not None else spec_path.parents[2]
    load = DpmLoader(_cache_for(root, dpm.SAMPLE_RATE))
    norm = spec.get("normalize", False) if normalize is None else normalize
    spec = dpm.resolve(spec, names)
    own = layout.dpm_spec(root, split, spec["name"])
    if own.resolve() != spec_path.resolve():  # rendering into another set: it gets its own copy of the spec
        own.parent.mkdir(parents=True, exist_ok=True)
        write_json(own, {**spec, "normalize": norm})
    result = render_dpm_spec(spec, root, norm, False, load)
    write_dpm_meta(root)
    layout.update_info(root, DPM_TSE.name, dpm.SAMPLE_RATE)
    return result, root / split


def jams_tasks(jams_dir: Path, out: Path) -> list[Task]:
    """Render tasks for every `mixture.jams` (or `*.jams`) under `jams_dir` whose scene is not rendered yet."""
    tasks: list[Task] = []
    for path in sorted(jams_dir.rglob("*.jams")):
        split = layout.split_of(path)
        name = path.parent.name if path.name == layout.JAMS_FILE else path.stem
        folder = layout.scene_dir(out, split, name)
        if not (folder / layout.RENDER_FILE).is_file():
            tasks.append((split, name, WAVEFORMER.render_jams, (split, str(path), str(folder))))
    return tasks


def render_jams_tree(
    jams_dir: Path,
    out: Path,
    fsd: Path | None,
    tau: Path | None,
    jobs: int,
    normalize: bool | None,
    on_start: Callable[[str, int], None] = lambda phase, total: None,
    on_result: Callable[[Result], None] = lambda r: None,
) -> Summary:
    """Render a tree of Scaper specs (e.g. the authors' `jams/{train,val,test}/<n>/mixture.jams`) into `out`."""
    names = _names(fsd, tau)
    if not any(jams_dir.rglob("*.jams")):
        raise DataError(f"{jams_dir}: no .jams files found")
    out.mkdir(parents=True, exist_ok=True)
    with FolderLock(out):
        remove_stale(out, recursive=True)
        return _render_jams_tree(jams_dir, out, names, jobs, normalize, on_start, on_result)


def _render_jams_tree(jams_dir: Path, out: Path, names, jobs: int, normalize, on_start, on_result) -> Summary:
    summary = Summary(WAVEFORMER)
    tasks = jams_tasks(jams_dir, out)
    first = scenes.read_jams(next(iter(sorted(jams_dir.rglob("*.jams")))))
    for split in layout.SPLITS:
        for name in WAVEFORMER.done_names(out, split):
            summary.add_existing(out, split, name)
    ctx = Context(WAVEFORMER, out, 0, normalize, False, None, first.sample_rate, names=names)
    try:
        run_into(summary, ctx, tasks, jobs, on_start, on_result)
    finally:
        layout.update_info(out, WAVEFORMER.name, first.sample_rate)
    return summary


def default_jams_output(jams_dir: Path) -> Path:
    """Where `tse mix render --jams DIR` writes by default: beside a `jams` folder, else into DIR."""
    return jams_dir.parent if jams_dir.name == "jams" else jams_dir
