"""Build or re-render mixture sets: scan sources, plan and render every mixture in worker processes, summarise.

Each mixture is planned from an RNG seeded by (seed, split, index), written as a specification, rendered, then
marked done by a small record written last. Every file goes through a temporary name and `os.replace`, so:

- the same seed gives byte-identical files whatever `jobs` is;
- a rerun skips mixtures whose done record exists and redoes the rest; an interrupted run leaves no partial file
  under a final name (stale temporaries from a killed run are removed at the next start).
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import soundfile as sf

from tse_cli.atomic import pid_alive, remove_stale, write_json, write_text
from tse_cli.data import dpm, scenes
from tse_cli.data.sources import Clip, Corpus, DataError, read_fsd, read_tau
from tse_cli.data.wavio import SourceCache, SourceError, write_wav

RECIPES = ("dpm-tse", "waveformer")
SPLITS = ("train", "val", "test")
PEAK = 0.99  # --normalize scales a mixture whose peak exceeds this down to it
BATCH = 8  # mixtures per worker task


@dataclass
class Options:
    """What to build. `count`: mixtures per split (None: the recipe's default sizes). `normalize`: None means the
    recipe's default (off for dpm-tse as published, on for waveformer as Scaper's fix_clipping)."""

    recipe: str
    fsd: Path
    tau: Path
    out: Path
    splits: tuple[str, ...] = SPLITS
    count: int | None = None
    seed: int = 0
    jobs: int = 1
    normalize: bool | None = None
    cache_dir: Path | None = None
    stems: bool = False

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise DataError(f"unknown recipe {self.recipe!r} (expected {' or '.join(RECIPES)})")
        if self.normalize is None:
            self.normalize = self.recipe == "waveformer"
        if self.cache_dir is None:
            self.cache_dir = self.out / ".cache"

    @property
    def sample_rate(self) -> int:
        return dpm.SAMPLE_RATE if self.recipe == "dpm-tse" else scenes.SAMPLE_RATE


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


@dataclass
class Summary:
    """The closing summary of a run."""

    recipe_is_dpm: bool = True
    per_split: Counter = field(default_factory=Counter)
    per_class: Counter = field(default_factory=Counter)
    resumed: int = 0
    rendered: int = 0
    clipped: list[Result] = field(default_factory=list)
    failed: list[Result] = field(default_factory=list)
    skipped_sources: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    missing_sources: list[Path] = field(default_factory=list)
    extra_sources: int = 0
    scan_seconds: float = 0.0
    mix_seconds: float = 0.0

    def add(self, result: Result) -> None:
        if result.error:
            self.failed.append(result)
            return
        self.per_split[result.split] += 1
        self.per_class.update(result.labels[:1] if self.recipe_is_dpm else result.labels)
        if result.existing:
            self.resumed += 1
        else:
            self.rendered += 1
        if result.clipped:
            self.clipped.append(result)


# ---- worker side --------------------------------------------------------------------------------------------------


@dataclass
class Context:
    """Everything a worker needs (pickled once per worker process)."""

    recipe: str
    out: Path
    seed: int
    normalize: bool
    stems: bool
    cache_dir: Path | None
    sample_rate: int
    pools: dict = field(default_factory=dict)  # split -> dpm.Pools | scenes.Pools
    names: dict[str, Clip] | None = None  # file name -> the user's copy (rendering existing specs)


_CTX: Context | None = None
_CACHE: SourceCache | None = None


def _init(ctx: Context) -> None:
    global _CTX, _CACHE
    _CTX = ctx
    _CACHE = SourceCache(ctx.sample_rate, ctx.cache_dir)


def _init_worker(ctx: Context) -> None:
    """Pool initializer: one thread per worker for torch (imported later, only if resampling is needed)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    _init(ctx)


def _dpm_load(path: str, kind: str) -> np.ndarray:
    return _CACHE.get(path, lambda a: dpm.prepare(a, kind), kind)


def _normalize(arrays: dict[str, np.ndarray], enabled: bool, keep: Iterable[str] = ()) -> tuple[float, float, int]:
    """Scale all arrays but `keep` by one gain when the mixture would clip; (gain, peak before, clipped samples)."""
    peak = float(np.abs(arrays["mixture"]).max())
    gain = PEAK / peak if enabled and peak > PEAK else 1.0
    if gain != 1.0:
        for key in arrays:
            if key not in keep:
                arrays[key] = arrays[key] * gain
    return gain, peak, int(np.count_nonzero(np.abs(arrays["mixture"]) >= 1.0))


def _dpm_paths(out: Path, split: str, name: str) -> tuple[Path, Path]:
    folder = out / "specs" / split
    return folder / f"{name}.json", folder / f"{name}.done.json"


def render_dpm_spec(spec: dict, out: Path, normalize: bool, stems: bool) -> Result:
    """Render a dpm-tse specification into the set at `out` and write its done record."""
    arrays = dpm.render(spec, _dpm_load)
    gain, peak, clipped = _normalize(arrays, normalize, keep=("reference",))
    files = dpm.output_files(out, spec)
    files["mixture"].parent.mkdir(parents=True, exist_ok=True)
    for key, path in files.items():
        write_wav(path, arrays[key], spec["sample_rate"])
    if stems:
        folder = out / "stems" / spec["split"]
        folder.mkdir(parents=True, exist_ok=True)
        for key in ["background"] + [f"int{k}" for k in range(1, len(spec["interferers"]) + 1)]:
            write_wav(folder / f"{spec['name']}_{key}.wav", arrays[key], spec["sample_rate"])
    target = spec["target"]
    labels = [target["label"]] + [s["label"] for s in spec["interferers"]]
    record = {
        "name": spec["name"],
        "subset": spec["split"],
        "folder": spec["split"],
        "file": files["mixture"].name,
        "cls": float(target["cls"]),
        "onset": target["onset"],
        "offset": target["offset"],
        "labels": labels,
        "peak": peak,
        "clipped_samples": clipped,
        "normalize_gain": gain,
    }
    write_json(_dpm_paths(out, spec["split"], spec["name"])[1], record)
    return Result(spec["split"], spec["name"], labels, peak, clipped, gain)


def _scene_dirs(out: Path, split: str, index: int) -> tuple[Path, Path]:
    name = f"{index:05d}"
    return out / "jams" / split / name, out / split / name


def render_scene(scene: scenes.Scene, folder: Path, split: str, normalize: bool) -> Result:
    """Render a scene into `folder` (mixture.wav, background.wav, <Label>.wav, render.json written last)."""
    arrays, events = scenes.render(scene, lambda p: _CACHE.get(p))
    gain, peak, clipped = _normalize(arrays, normalize)
    folder.mkdir(parents=True, exist_ok=True)
    for key, audio in arrays.items():
        write_wav(folder / f"{key}.wav", audio, scene.sample_rate)
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
    write_json(folder / "render.json", record)
    return Result(split, folder.name, scene.labels, peak, clipped, gain)


def _mix_one(split: str, index: int) -> Result:
    ctx = _CTX
    if ctx.recipe == "dpm-tse":
        spec = dpm.plan(ctx.pools[split], ctx.seed, split, index, _dpm_load)
        spec_path, _ = _dpm_paths(ctx.out, split, spec["name"])
        spec_path.parent.mkdir(parents=True, exist_ok=True)
        write_json(spec_path, {**spec, "normalize": ctx.normalize})
        return render_dpm_spec(spec, ctx.out, ctx.normalize, ctx.stems)
    scene = scenes.plan(ctx.pools[split], ctx.seed, split, index)
    scene.fix_clipping = ctx.normalize
    spec_dir, audio_dir = _scene_dirs(ctx.out, split, index)
    spec_dir.mkdir(parents=True, exist_ok=True)
    write_json(spec_dir / "mixture.jams", scenes.to_jams(scene))
    write_text(spec_dir / "gt_events.csv", scenes.gt_events_csv(scene))
    return render_scene(scene, audio_dir, split, ctx.normalize)


def _render_jams(split: str, jams: str, folder: str) -> Result:
    scene = scenes.resolve(scenes.read_jams(jams), _CTX.names)
    normalize = scene.fix_clipping if _CTX.normalize is None else _CTX.normalize
    return render_scene(scene, Path(folder), split, normalize)


def _work(batch: list[tuple]) -> list[Result]:
    """Worker entry: a batch of (split, name, function name, args) tasks; errors become failed results."""
    results = []
    for split, name, fn, args in batch:
        try:
            results.append(_TASKS[fn](*args))
        except (SourceError, ValueError, OSError) as err:
            results.append(Result(split, name, error=str(err)))
    return results


_TASKS: dict[str, Callable[..., Result]] = {"mix": _mix_one, "jams": _render_jams}


def _scan_tasks(batch: list[tuple]) -> list[tuple[str, int | str]]:
    """Worker entry for the dpm-tse scan: (path, prepared length or reason unusable) per task."""
    return [_scan_dpm(p) for _, _, _, (p,) in batch]


def _scan_dpm(path: str) -> tuple[str, int | str]:
    """Decode (and cache) a foreground clip; its prepared length, or the reason it is unusable."""
    try:
        n = _dpm_load(path, "foreground").size
    except SourceError as err:
        return path, str(err).removeprefix(f"{path}: ")
    return path, n if n > 0 else "silent after silence removal"


# ---- orchestration ------------------------------------------------------------------------------------------------


def _run(ctx: Context, tasks: list[tuple], jobs: int, on_result: Callable[[Result], None], fn=_work) -> None:
    """Run task batches in-process (jobs=1) or on a spawn pool; calls `on_result` for each result in order
    of completion."""
    batches = [tasks[i : i + BATCH] for i in range(0, len(tasks), BATCH)]
    if jobs <= 1 or len(batches) <= 1:
        _init(ctx)
        for batch in batches:
            for r in fn(batch):
                on_result(r)
        return
    with ProcessPoolExecutor(
        max_workers=jobs, mp_context=get_context("spawn"), initializer=_init_worker, initargs=(ctx,)
    ) as ex:
        futures = [ex.submit(fn, b) for b in batches]
        try:
            for fut in as_completed(futures):
                for r in fut.result():
                    on_result(r)
        except BaseException:
            ex.shutdown(wait=True, cancel_futures=True)
            raise


class _Lock:
    """`OUT/.tse-mix.lock` (holding the pid) while a run writes a set; a lock left by a dead process is taken over."""

    def __init__(self, root: Path) -> None:
        self.path = root / ".tse-mix.lock"

    def __enter__(self) -> _Lock:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and pid_alive(pid):
                    raise DataError(f"{self.path.parent}: another tse mix (pid {pid}) is writing this folder") from None
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(str(os.getpid()))
            return self
        raise DataError(f"{self.path}: cannot take the lock")

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)


def _run_into(summary: Summary, ctx: Context, tasks: list[tuple], jobs: int, on_start, on_result) -> None:
    """Run `tasks` (see `_run`), adding every result to `summary` and timing the mixing into it."""
    on_start("mix", len(tasks))

    def collect(result: Result) -> None:
        summary.add(result)
        on_result(result)

    t1 = time.perf_counter()
    try:
        _run(ctx, tasks, jobs, collect)
    finally:
        summary.mix_seconds = time.perf_counter() - t1


def _check_recipe_file(opts: Options) -> None:
    info = opts.out / "recipe.json"
    if not info.is_file():
        return
    try:
        old = json.loads(info.read_text())
    except ValueError:
        raise DataError(f"{info}: malformed (delete it, or choose another output folder)") from None
    for key, new in (("recipe", opts.recipe), ("seed", opts.seed), ("normalize", opts.normalize)):
        if old.get(key) != new:
            raise DataError(
                f"{opts.out} was built with {key}={old.get(key)!r}, this run asks {key}={new!r}: "
                "resume with the same settings or use another output folder"
            )


def _write_recipe_file(out: Path, recipe: str, sample_rate: int, **extra) -> None:
    info = out / "recipe.json"
    old = json.loads(info.read_text()) if info.is_file() else {}
    sizes = {**old.get("splits", {}), **extra.pop("splits", {})}
    write_json(info, {**old, "recipe": recipe, "sample_rate": sample_rate, **extra, "splits": sizes})


def _sources(opts: Options, summary: Summary) -> tuple[Corpus, Corpus]:
    if opts.recipe == "dpm-tse":
        fsd_sets = tuple(dict.fromkeys("train" if s == "train" else "test" for s in opts.splits))
        tau_sets = ("development",)
    else:
        fsd_sets = tuple(dict.fromkeys("train" if s in ("train", "val") else "test" for s in opts.splits))
        tau_sets = tuple(dict.fromkeys("evaluation" if s == "test" else "development" for s in opts.splits))
    fsd, tau = read_fsd(opts.fsd, fsd_sets), read_tau(opts.tau, tau_sets)
    summary.missing_sources = fsd.missing + tau.missing
    summary.extra_sources = len(fsd.extra) + len(tau.extra)
    return fsd, tau


def _readable(clips: list[Clip], summary: Summary) -> tuple[list[Clip], dict[str, float]]:
    """Clips whose header reads, with durations in seconds; the others go to the summary."""
    good, durations = [], {}
    for clip in clips:
        try:
            info = sf.info(str(clip.path))
            if info.frames == 0:
                raise RuntimeError("no audio frames")
        except (RuntimeError, sf.LibsndfileError, OSError) as err:
            summary.skipped_sources.append((str(clip.path), f"unreadable ({err})"))
            continue
        good.append(clip)
        durations[str(clip.path)] = info.frames / info.samplerate
    return good, durations


def _scan_foregrounds(opts: Options, ctx: Context, clips: list[Clip], summary: Summary, on_scan) -> list[Clip]:
    """dpm-tse: decode every foreground clip once (filling the cache); keep those with audio left after
    silence removal. Results are remembered in the cache folder, so a rerun does not decode again."""
    memo_path = opts.cache_dir / "scan-dpm-tse.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    cache = SourceCache(opts.sample_rate, None)
    keys, unreadable = {}, {}
    for c in clips:
        try:
            keys[str(c.path)] = cache.key(c.path)
        except SourceError as err:
            unreadable[str(c.path)] = str(err).removeprefix(f"{c.path.resolve()}: ")
    todo = [(p, p, "scan", (p,)) for p, k in keys.items() if k not in memo]
    found: dict[str, int | str] = {}

    def collect(item: tuple[str, int | str]) -> None:
        found[item[0]] = item[1]
        on_scan()

    if todo:
        _run(ctx, todo, opts.jobs, collect, fn=_scan_tasks)
    for path, value in found.items():
        memo[keys[path]] = value
    opts.cache_dir.mkdir(parents=True, exist_ok=True)
    write_json(memo_path, memo)
    usable = []
    for c in clips:
        value = memo[keys[str(c.path)]] if str(c.path) in keys else unreadable[str(c.path)]
        if isinstance(value, int):
            usable.append(c)
        else:
            summary.skipped_sources.append((str(c.path), str(value)))
    return usable


def _dpm_pools(split: str, fsd: Corpus, usable: set[str], backgrounds: list[Clip], summary: Summary) -> dpm.Pools:
    subset = "train" if split == "train" else "test"
    fg = sorted((c for c in fsd.clips[subset] if str(c.path) in usable), key=lambda c: c.fname)
    per_label = Counter(c.label for c in fg)
    targets = [c for c in fg if per_label[c.label] >= 2]
    for clip in fg:
        if per_label[clip.label] < 2:
            reason = f"not used as a {split} target: the only usable {clip.label} clip (no same-class reference)"
            summary.skipped_sources.append((str(clip.path), reason))
    return dpm.Pools(targets, fg, backgrounds)


def _scene_pools(split: str, fsd: Corpus, tau: Corpus, durations: dict[str, float]) -> scenes.Pools:
    if split == "test":
        fg = fsd.clips["test"]
        bg = tau.clips["evaluation"]
    else:
        fg = [c for c in fsd.clips["train"] if scenes.is_val_clip(c.fname) == (split == "val")]
        bg = tau.clips["development"]
    fg = [c for c in fg if str(c.path) in durations]
    bg = sorted((c for c in bg if str(c.path) in durations), key=lambda c: c.fname)
    if not fg or not bg:
        raise DataError(f"no readable {'foreground' if not fg else 'background'} clips for the {split} split")
    return scenes.Pools(fg, bg, durations)


def build(
    opts: Options,
    on_start: Callable[[str, int], None] = lambda phase, total: None,
    on_result: Callable[[Result], None] = lambda r: None,
) -> Summary:
    """Build the set described by `opts`. `on_start(phase, total)` announces the `scan` and `mix` phases,
    `on_result` is called per mixture (and with None per scanned clip) for progress displays."""
    summary = Summary(recipe_is_dpm=opts.recipe == "dpm-tse")
    fsd, tau = _sources(opts, summary)
    opts.out.mkdir(parents=True, exist_ok=True)
    with _Lock(opts.out):
        _check_recipe_file(opts)
        remove_stale(opts.out, recursive=True)
        return _build(opts, fsd, tau, summary, on_start, on_result)


def _build(opts: Options, fsd: Corpus, tau: Corpus, summary: Summary, on_start, on_result) -> Summary:
    ctx = Context(opts.recipe, opts.out, opts.seed, opts.normalize, opts.stems, opts.cache_dir, opts.sample_rate)
    t0 = time.perf_counter()
    fg_all = [c for clips in fsd.clips.values() for c in clips]
    bg_all = [c for clips in tau.clips.values() for c in clips]
    backgrounds, durations = _readable(bg_all, summary)
    if opts.recipe == "dpm-tse":
        on_start("scan", len(fg_all))
        usable = {str(c.path) for c in _scan_foregrounds(opts, ctx, fg_all, summary, lambda: on_result(None))}
        backgrounds = sorted(backgrounds, key=lambda c: c.fname)
        if not backgrounds:
            raise DataError(f"{opts.tau}: no readable TAU development backgrounds")
        for split in opts.splits:
            ctx.pools[split] = _dpm_pools(split, fsd, usable, backgrounds, summary)
            if not ctx.pools[split].targets:
                raise DataError(f"no usable target clips for the {split} split (each class needs two clips)")
    else:
        _, fg_durations = _readable(fg_all, summary)
        durations.update(fg_durations)
        for split in opts.splits:
            ctx.pools[split] = _scene_pools(split, fsd, tau, durations)
    summary.scan_seconds = time.perf_counter() - t0

    sizes = {s: _split_size(opts, ctx, s) for s in opts.splits}
    tasks = []
    for split in opts.splits:
        done = _done_names(opts, split)
        for index in range(sizes[split]):
            name = f"{split}_{index + 1}" if opts.recipe == "dpm-tse" else f"{index:05d}"
            if name in done:
                summary.add(_existing_result(opts.recipe, opts.out, split, name))
            else:
                tasks.append((split, name, "mix", (split, index)))
    try:
        _run_into(summary, ctx, tasks, opts.jobs, on_start, on_result)
    finally:
        _finish(opts, sizes)
    return summary


def _split_size(opts: Options, ctx: Context, split: str) -> int:
    if opts.count is not None:
        return opts.count
    if opts.recipe == "dpm-tse":
        return dpm.split_size(ctx.pools[split], split)
    return scenes.DEFAULT_SIZES[split]


def _done_names(opts: Options, split: str) -> set[str]:
    if opts.recipe == "dpm-tse":
        folder = opts.out / "specs" / split
        return {p.name[: -len(".done.json")] for p in folder.glob("*.done.json")} if folder.is_dir() else set()
    folder = opts.out / split
    return {p.parent.name for p in folder.glob("*/render.json")} if folder.is_dir() else set()


def _existing_result(recipe: str, out: Path, split: str, name: str) -> Result:
    path = _dpm_paths(out, split, name)[1] if recipe == "dpm-tse" else out / split / name / "render.json"
    rec = json.loads(path.read_text())
    return Result(split, name, rec["labels"], rec["peak"], rec["clipped_samples"], rec["normalize_gain"], existing=True)


def _finish(opts: Options, sizes: dict[str, int]) -> None:
    """recipe.json, and for dpm-tse the meta.csv of every finished mixture (all splits)."""
    _write_recipe_file(opts.out, opts.recipe, opts.sample_rate, seed=opts.seed, normalize=opts.normalize, splits=sizes)
    if opts.recipe == "dpm-tse":
        write_meta_csv(opts.out)


def write_meta_csv(out: Path) -> int:
    """Rewrite `out/meta.csv` (subset,folder,file,cls,onset,offset) from the done records; returns rows."""
    rows = []
    for split in SPLITS:
        folder = out / "specs" / split
        if not folder.is_dir():
            continue
        records = [json.loads(p.read_text()) for p in folder.glob("*.done.json")]
        records.sort(key=lambda r: int(r["name"].rsplit("_", 1)[1]))
        rows += [[r["subset"], r["folder"], r["file"], r["cls"], r["onset"], r["offset"]] for r in records]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["subset", "folder", "file", "cls", "onset", "offset"])
    writer.writerows(rows)
    write_text(out / "meta.csv", buf.getvalue())
    return len(rows)


# ---- re-rendering existing specifications -------------------------------------------------------------------------


def split_of(path: Path) -> str:
    """The split a spec path belongs to (the nearest folder named train/val/test); ValueError otherwise."""
    for part in reversed(path.parts[:-1]):
        if part in SPLITS:
            return part
    raise ValueError(f"{path}: no train/val/test folder in its path (cannot tell its split)")


def _names(fsd: Path | None, tau: Path | None) -> dict[str, Clip] | None:
    """File name -> clip for every audio file under the user's FSD/TAU folders (for resolving specs written
    elsewhere). Any layout works: the downloads, or the authors' re-sorted `FSDKaggle2018/<split>/<label>/`."""
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


def render_spec(
    spec_path: Path, fsd: Path | None, tau: Path | None, out: Path | None, normalize: bool | None
) -> tuple[Result, Path]:
    """Re-render one specification (`.json` dpm-tse or `.jams` scene); returns the result and where it went.

    Our own specs go back where their set has them (`OUT/specs/<split>/x.json` -> `OUT/<split>/`,
    `OUT/jams/<split>/<n>/mixture.jams` -> `OUT/<split>/<n>/`) unless `out` says otherwise.
    """
    names = _names(fsd, tau)
    split = split_of(spec_path)
    if spec_path.suffix == ".jams":
        root = out if out is not None else spec_path.parents[3]
        folder = root / split / spec_path.parent.name
        scene = scenes.resolve(scenes.read_jams(spec_path), names)
        _init(Context("waveformer", root, 0, normalize, False, _cache_for(root), scene.sample_rate, names=names))
        result = render_scene(scene, folder, split, scene.fix_clipping if normalize is None else normalize)
        _write_recipe_file(root, "waveformer", scene.sample_rate)
        return result, folder
    try:
        spec = json.loads(spec_path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{spec_path}: not a readable specification ({err})") from None
    root = out if out is not None else spec_path.parents[2]
    _init(Context("dpm-tse", root, 0, False, False, _cache_for(root), dpm.SAMPLE_RATE))
    norm = spec.get("normalize", False) if normalize is None else normalize
    spec = dpm.resolve(spec, names)
    own, _ = _dpm_paths(root, split, spec["name"])
    if own.resolve() != spec_path.resolve():  # rendering into another set: it gets its own copy of the spec
        own.parent.mkdir(parents=True, exist_ok=True)
        write_json(own, {**spec, "normalize": norm})
    result = render_dpm_spec(spec, root, norm, stems=False)
    write_meta_csv(root)
    _write_recipe_file(root, "dpm-tse", dpm.SAMPLE_RATE)
    return result, root / split


def _cache_for(root: Path) -> Path | None:
    return root / ".cache" if (root / ".cache").is_dir() else None


def jams_tasks(jams_dir: Path, out: Path) -> list[tuple]:
    """Render tasks for every `mixture.jams` (or `*.jams`) under `jams_dir` whose scene is not rendered yet."""
    tasks = []
    for path in sorted(jams_dir.rglob("*.jams")):
        split = split_of(path)
        name = path.parent.name if path.name == "mixture.jams" else path.stem
        folder = out / split / name
        if not (folder / "render.json").is_file():
            tasks.append((split, name, "jams", (split, str(path), str(folder))))
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
    with _Lock(out):
        remove_stale(out, recursive=True)
        return _render_jams_tree(jams_dir, out, names, jobs, normalize, on_start, on_result)


def _render_jams_tree(jams_dir: Path, out: Path, names, jobs: int, normalize, on_start, on_result) -> Summary:
    summary = Summary(recipe_is_dpm=False)
    tasks = jams_tasks(jams_dir, out)
    first = scenes.read_jams(next(iter(sorted(jams_dir.rglob("*.jams")))))
    for split in SPLITS:
        folder = out / split
        for rec in folder.glob("*/render.json") if folder.is_dir() else []:
            summary.add(_existing_result("waveformer", out, split, rec.parent.name))
    ctx = Context("waveformer", out, 0, normalize, False, None, first.sample_rate, names=names)
    try:
        _run_into(summary, ctx, tasks, jobs, on_start, on_result)
    finally:
        _write_recipe_file(out, "waveformer", first.sample_rate)
    return summary


def default_jams_output(jams_dir: Path) -> Path:
    """Where `tse mix render --jams DIR` writes by default: beside a `jams` folder, else into DIR."""
    return jams_dir.parent if jams_dir.name == "jams" else jams_dir


def environment_jobs() -> int:
    """A sensible default for --jobs: the CPUs this process may use."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
