"""The two mixture recipes as objects: what each reads from the sources, how it names, plans, renders and
finishes a set. `get_recipe(name)` gives `DPM_TSE` or `WAVEFORMER`; the build loop (`build`) asks them, so no
other module compares recipe names.

Recipes hold no state (they pickle cheaply into worker processes); their worker-side methods (`mix`,
`measure`, `render_jams`) take the build's `Context` and the worker's `SourceCache`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from pathlib import Path

import numpy as np

from tse_cli.atomic import write_json, write_text
from tse_cli.data import dpm, layout, scenes
from tse_cli.data.render import Result, render_dpm_spec, render_scene, write_dpm_meta
from tse_cli.data.scan import Skipped, Sources, decode_all, readable
from tse_cli.data.sources import Clip, Corpus
from tse_cli.data.wavio import SourceCache, SourceError
from tse_cli.data.workers import Context
from tse_cli.errors import DataError


class Recipe(ABC):
    """One way of making mixtures. `name` is what `tse mix --recipe` and recipe.json say; `sample_rate` (Hz) the
    set's rate; `normalize` the default of `--normalize`; `one_target`: one target per mixture (the others
    interfere), else every label of a scene can be queried."""

    name: str
    sample_rate: int
    normalize: bool
    one_target: bool

    @abstractmethod
    def source_subsets(self, splits: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The FSD and TAU subsets the splits draw from."""

    @abstractmethod
    def item_name(self, split: str, index: int) -> str:
        """The name of mixture `index` (0-based) of a split."""

    @abstractmethod
    def done_names(self, root: Path, split: str) -> list[str]:
        """Names of the split's finished mixtures in the set at `root`."""

    @abstractmethod
    def done_record(self, root: Path, split: str, name: str) -> Path:
        """A mixture's render record (written last)."""

    def queried(self, labels: list[str]) -> list[str]:
        """The labels a mixture counts for in the per-class summary."""
        return labels[:1] if self.one_target else labels

    @abstractmethod
    def prepare(self, ctx: Context, src: Sources) -> None:
        """Fill `ctx.pools` (split -> what its mixtures draw from) for the splits of `src`."""

    @abstractmethod
    def split_size(self, ctx: Context, split: str) -> int:
        """The published number of mixtures of a split (when --count does not say)."""

    @abstractmethod
    def mix(self, ctx: Context, cache: SourceCache, split: str, index: int) -> Result:
        """Worker side: plan mixture `index` of a split, write its specification, render it."""

    @abstractmethod
    def finish(self, root: Path) -> None:
        """What a set needs after a run beyond its mixtures and recipe.json."""


class DpmLoader:
    """A worker's `dpm.Loader`: decoded 16 kHz clips prepared for their role (`dpm.prepare`) and their RMS, both
    memoised in its source cache."""

    def __init__(self, cache: SourceCache) -> None:
        self.cache = cache

    def __call__(self, path: str, kind: str) -> np.ndarray:
        return self.cache.get(path, lambda audio: dpm.prepare(audio, kind), kind)

    def rms(self, path: str, kind: str) -> float:
        return self.cache.value(path, f"{kind} rms", lambda: dpm.rms(self(path, kind)))


class DpmTse(Recipe):
    """Tim-TSENet / DPM-TSE (`tse_cli.data.dpm`): 10 s at 16 kHz, a target, 1-3 interferers, a background."""

    name = "dpm-tse"
    sample_rate = dpm.SAMPLE_RATE
    normalize = False  # as published
    one_target = True

    def source_subsets(self, splits: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return tuple(dict.fromkeys("train" if s == "train" else "test" for s in splits)), ("development",)

    def item_name(self, split: str, index: int) -> str:
        return layout.dpm_name(split, index)

    def done_names(self, root: Path, split: str) -> list[str]:
        return layout.dpm_done_names(root, split)

    def done_record(self, root: Path, split: str, name: str) -> Path:
        return layout.dpm_done(root, split, name)

    def prepare(self, ctx: Context, src: Sources) -> None:
        """Decode every foreground clip once (it fills the cache); keep those with audio left after silence
        removal, and as targets those with a same-class partner."""
        fg_all = [c for clips in src.fsd.clips.values() for c in clips]
        backgrounds, _ = readable([c for clips in src.tau.clips.values() for c in clips], src.skipped)
        src.on_start("scan", len(fg_all))
        memo = ctx.cache_dir / f"scan-{self.name}.json"
        usable = {str(c.path) for c in decode_all(ctx, fg_all, src.jobs, memo, self.measure, src.skipped, src.on_scan)}
        backgrounds = sorted(backgrounds, key=lambda c: c.fname)
        if not backgrounds:
            raise DataError(f"{src.tau.root}: no readable TAU development backgrounds")
        for split in src.splits:
            ctx.pools[split] = self._pools(split, src.fsd, usable, backgrounds, src.skipped)
            if not ctx.pools[split].targets:
                raise DataError(f"no usable target clips for the {split} split (each class needs two clips)")

    def measure(self, ctx: Context, cache: SourceCache, path: str) -> tuple[str, int | str]:
        """Worker side: a foreground clip's prepared length, or the reason it is unusable."""
        try:
            n = DpmLoader(cache)(path, "foreground").size
        except SourceError as err:
            return path, str(err).removeprefix(f"{path}: ")
        return path, n if n > 0 else "silent after silence removal"

    @staticmethod
    def _pools(split: str, fsd: Corpus, usable: set[str], backgrounds: list[Clip], skipped: Skipped) -> dpm.Pools:
        subset = "train" if split == "train" else "test"
        fg = sorted((c for c in fsd.clips[subset] if str(c.path) in usable), key=lambda c: c.fname)
        per_label = Counter(c.label for c in fg)
        for clip in fg:
            if per_label[clip.label] < 2:
                reason = f"not used as a {split} target: the only usable {clip.label} clip (no same-class reference)"
                skipped.append((str(clip.path), reason))
        return dpm.Pools([c for c in fg if per_label[c.label] >= 2], fg, backgrounds)

    def split_size(self, ctx: Context, split: str) -> int:
        return dpm.split_size(ctx.pools[split], split)

    def mix(self, ctx: Context, cache: SourceCache, split: str, index: int) -> Result:
        load = DpmLoader(cache)
        spec = dpm.plan(ctx.pools[split], ctx.seed, split, index, load)
        spec_path = layout.dpm_spec(ctx.out, split, spec["name"])
        spec_path.parent.mkdir(parents=True, exist_ok=True)
        write_json(spec_path, {**spec, "normalize": ctx.normalize})
        return render_dpm_spec(spec, ctx.out, ctx.normalize, ctx.stems, load)

    def finish(self, root: Path) -> None:
        """meta.csv of every finished mixture (all splits), for the published DPM-TSE loader."""
        write_dpm_meta(root)


class Waveformer(Recipe):
    """The Waveformer recipe (`tse_cli.data.scenes`): 6 s scenes at 44.1 kHz as Scaper specifications."""

    name = "waveformer"
    sample_rate = scenes.SAMPLE_RATE
    normalize = True  # Scaper's fix_clipping
    one_target = False

    def source_subsets(self, splits: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        fsd = tuple(dict.fromkeys("train" if s in ("train", "val") else "test" for s in splits))
        tau = tuple(dict.fromkeys("evaluation" if s == "test" else "development" for s in splits))
        return fsd, tau

    def item_name(self, split: str, index: int) -> str:
        return layout.scene_name(index)

    def done_names(self, root: Path, split: str) -> list[str]:
        return [folder.name for folder in layout.rendered_scenes(root, split)]

    def done_record(self, root: Path, split: str, name: str) -> Path:
        return layout.scene_dir(root, split, name) / layout.RENDER_FILE

    def prepare(self, ctx: Context, src: Sources) -> None:
        """Foreground and background clips whose headers read, with their durations."""
        _, durations = readable([c for clips in src.tau.clips.values() for c in clips], src.skipped)
        durations.update(readable([c for clips in src.fsd.clips.values() for c in clips], src.skipped)[1])
        for split in src.splits:
            if split == "test":
                fg, bg = src.fsd.clips["test"], src.tau.clips["evaluation"]
            else:
                fg = [c for c in src.fsd.clips["train"] if scenes.is_val_clip(c.fname) == (split == "val")]
                bg = src.tau.clips["development"]
            fg = [c for c in fg if str(c.path) in durations]
            bg = sorted((c for c in bg if str(c.path) in durations), key=lambda c: c.fname)
            if not fg or not bg:
                raise DataError(f"no readable {'foreground' if not fg else 'background'} clips for the {split} split")
            ctx.pools[split] = scenes.Pools(fg, bg, durations)

    def split_size(self, ctx: Context, split: str) -> int:
        return scenes.DEFAULT_SIZES[split]

    def mix(self, ctx: Context, cache: SourceCache, split: str, index: int) -> Result:
        scene = scenes.plan(ctx.pools[split], ctx.seed, split, index)
        scene.fix_clipping = ctx.normalize
        name = layout.scene_name(index)
        spec_dir = layout.scene_spec_dir(ctx.out, split, name)
        spec_dir.mkdir(parents=True, exist_ok=True)
        write_json(spec_dir / layout.JAMS_FILE, scenes.to_jams(scene))
        write_text(spec_dir / layout.GT_EVENTS_FILE, scenes.gt_events_csv(scene))
        return render_scene(scene, layout.scene_dir(ctx.out, split, name), split, ctx.normalize, cache.get)

    def render_jams(self, ctx: Context, cache: SourceCache, split: str, jams: str, folder: str) -> Result:
        """Worker side: render an existing `.jams` specification into `folder` (sources resolved by file name
        against `ctx.names`; `ctx.normalize` None keeps the spec's own fix_clipping)."""
        scene = scenes.resolve(scenes.read_jams(jams), ctx.names)
        normalize = scene.fix_clipping if ctx.normalize is None else ctx.normalize
        return render_scene(scene, Path(folder), split, normalize, cache.get)

    def finish(self, root: Path) -> None:
        """Nothing: every scene folder is complete on its own."""


DPM_TSE = DpmTse()
WAVEFORMER = Waveformer()
RECIPES: dict[str, Recipe] = {r.name: r for r in (DPM_TSE, WAVEFORMER)}


def get_recipe(name: str) -> Recipe:
    """The recipe called `name`; DataError naming the choices otherwise."""
    try:
        return RECIPES[name]
    except KeyError:
        raise DataError(f"unknown recipe {name!r} (expected {' or '.join(RECIPES)})") from None
