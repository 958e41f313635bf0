"""Build a mixture set: read the sources, let the recipe scan them and plan its splits, render every mixture in
worker processes, summarise.

Each mixture is planned from an RNG seeded by (seed, split, index), written as a specification, rendered, then
marked done by a small record written last (`tse_cli.data.render`). Every file goes through a temporary name
and `os.replace` (`tse_cli.atomic`), so:

- the same seed gives byte-identical files whatever `jobs` is;
- a rerun skips mixtures whose done record exists and redoes the rest; an interrupted run leaves no partial file
  under a final name (stale temporaries from a killed run are removed at the next start).

Re-rendering existing specifications is `tse_cli.data.rerender`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tse_cli.atomic import remove_stale
from tse_cli.data import layout
from tse_cli.data.lock import FolderLock
from tse_cli.data.recipes import Recipe, get_recipe
from tse_cli.data.render import Result, existing_result
from tse_cli.data.scan import Sources
from tse_cli.data.sources import Corpus, read_fsd, read_tau
from tse_cli.data.workers import Context, Task, run
from tse_cli.errors import DataError

SPLITS = layout.SPLITS


@dataclass
class Options:
    """What to build. `recipe`: a `Recipe` or its name. `count`: mixtures per split (None: the recipe's default
    sizes). `normalize`: None means the recipe's default (off for dpm-tse as published, on for waveformer as
    Scaper's fix_clipping)."""

    recipe: Recipe | str
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
        if isinstance(self.recipe, str):
            self.recipe = get_recipe(self.recipe)
        if self.normalize is None:
            self.normalize = self.recipe.normalize
        if self.cache_dir is None:
            self.cache_dir = self.out / layout.CACHE_DIR

    @property
    def sample_rate(self) -> int:
        return self.recipe.sample_rate


@dataclass
class Summary:
    """The closing summary of a run (of `recipe`'s mixtures: the per-class counts follow its queries)."""

    recipe: Recipe
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
        self.per_class.update(self.recipe.queried(result.labels))
        if result.existing:
            self.resumed += 1
        else:
            self.rendered += 1
        if result.clipped:
            self.clipped.append(result)

    def add_existing(self, root: Path, split: str, name: str) -> None:
        """Count a mixture finished by an earlier run."""
        self.add(existing_result(self.recipe.done_record(root, split, name), split, name))


def run_into(summary: Summary, ctx: Context, tasks: list[Task], jobs: int, on_start, on_result) -> None:
    """Run mixture `tasks` (`workers.run`), adding every result to `summary` and timing the mixing into it."""
    on_start("mix", len(tasks))

    def collect(result: Result) -> None:
        summary.add(result)
        on_result(result)

    t1 = time.perf_counter()
    try:
        run(ctx, tasks, jobs, collect)
    finally:
        summary.mix_seconds = time.perf_counter() - t1


def build(
    opts: Options,
    on_start: Callable[[str, int], None] = lambda phase, total: None,
    on_result: Callable[[Result], None] = lambda r: None,
) -> Summary:
    """Build the set described by `opts`. `on_start(phase, total)` announces the `scan` and `mix` phases,
    `on_result` is called per mixture (and with None per scanned clip) for progress displays."""
    summary = Summary(opts.recipe)
    fsd_sets, tau_sets = opts.recipe.source_subsets(opts.splits)
    fsd, tau = read_fsd(opts.fsd, fsd_sets), read_tau(opts.tau, tau_sets)
    summary.missing_sources = fsd.missing + tau.missing
    summary.extra_sources = len(fsd.extra) + len(tau.extra)
    opts.out.mkdir(parents=True, exist_ok=True)
    with FolderLock(opts.out):
        _check_recipe_file(opts)
        remove_stale(opts.out, recursive=True)
        return _build(opts, fsd, tau, summary, on_start, on_result)


def _check_recipe_file(opts: Options) -> None:
    """Refuse to resume a set made with other settings."""
    try:
        old = layout.read_info(opts.out)
    except ValueError:
        raise DataError(
            f"{opts.out / layout.RECIPE_FILE}: malformed (delete it, or choose another output folder)"
        ) from None
    for key, new in (("recipe", opts.recipe.name), ("seed", opts.seed), ("normalize", opts.normalize)):
        if old is not None and old.get(key) != new:
            raise DataError(
                f"{opts.out} was built with {key}={old.get(key)!r}, this run asks {key}={new!r}: "
                "resume with the same settings or use another output folder"
            )


def _build(opts: Options, fsd: Corpus, tau: Corpus, summary: Summary, on_start, on_result) -> Summary:
    recipe = opts.recipe
    ctx = Context(recipe, opts.out, opts.seed, opts.normalize, opts.stems, opts.cache_dir, opts.sample_rate)
    t0 = time.perf_counter()
    recipe.prepare(
        ctx, Sources(opts.splits, fsd, tau, opts.jobs, summary.skipped_sources, on_start, lambda: on_result(None))
    )
    summary.scan_seconds = time.perf_counter() - t0

    sizes = {s: opts.count if opts.count is not None else recipe.split_size(ctx, s) for s in opts.splits}
    tasks: list[Task] = []
    for split in opts.splits:
        done = set(recipe.done_names(opts.out, split))
        for index in range(sizes[split]):
            name = recipe.item_name(split, index)
            if name in done:
                summary.add_existing(opts.out, split, name)
            else:
                tasks.append((split, name, recipe.mix, (split, index)))
    try:
        run_into(summary, ctx, tasks, opts.jobs, on_start, on_result)
    finally:
        layout.update_info(
            opts.out, recipe.name, opts.sample_rate, seed=opts.seed, normalize=opts.normalize, splits=sizes
        )
        recipe.finish(opts.out)
    return summary
