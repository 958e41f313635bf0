"""Source scanning for `tse mix`: which downloaded clips a build can use (header checks, durations, and for
recipes that need it a decode of every clip in the worker pool, remembered in the cache folder)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from tse_cli.atomic import write_json
from tse_cli.data.sources import Clip, Corpus
from tse_cli.data.wavio import SourceCache, SourceError
from tse_cli.data.workers import Context, Task, collect, run

Skipped = list[tuple[str, str]]  # (path, reason) of each source left out


@dataclass
class Sources:
    """What a recipe prepares its splits from: the corpora read for `splits`, `jobs` workers for scans that
    decode, the list of sources left out (`skipped`), and progress callbacks: `on_start(phase, total)`
    announces a scan, `on_scan()` marks one clip scanned."""

    splits: tuple[str, ...]
    fsd: Corpus
    tau: Corpus
    jobs: int
    skipped: Skipped
    on_start: Callable[[str, int], None]
    on_scan: Callable[[], None]


def readable(clips: list[Clip], skipped: Skipped) -> tuple[list[Clip], dict[str, float]]:
    """Clips whose header reads, with durations in seconds by path; the others are added to `skipped`."""
    good, durations = [], {}
    for clip in clips:
        try:
            info = sf.info(str(clip.path))
            if info.frames == 0:
                raise RuntimeError("no audio frames")
        except (RuntimeError, sf.LibsndfileError, OSError) as err:
            skipped.append((str(clip.path), f"unreadable ({err})"))
            continue
        good.append(clip)
        durations[str(clip.path)] = info.frames / info.samplerate
    return good, durations


def decode_all(
    ctx: Context,
    clips: list[Clip],
    jobs: int,
    memo_path: Path,
    measure: Callable[[Context, SourceCache, str], tuple[str, int | str]],
    skipped: Skipped,
    on_scan: Callable[[], None],
) -> list[Clip]:
    """Decode every clip once in the worker pool (filling the source cache); keep those for which
    `measure(ctx, cache, path)` gives a length (an int) rather than the reason it is unusable.

    Results are remembered in `memo_path` by cache key (a changed file is measured again), so a rerun decodes
    nothing; `on_scan` is called once per clip measured now.
    """
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    cache = SourceCache(ctx.sample_rate, None)
    keys, unreadable = {}, {}
    for c in clips:
        try:
            keys[str(c.path)] = cache.key(c.path)
        except SourceError as err:
            unreadable[str(c.path)] = str(err).removeprefix(f"{c.path.resolve()}: ")
    todo: list[Task] = [(p, p, measure, (p,)) for p, k in keys.items() if k not in memo]
    found: dict[str, int | str] = {}

    def remember(item: tuple[str, int | str]) -> None:
        found[item[0]] = item[1]
        on_scan()

    if todo:
        run(ctx, todo, jobs, remember, entry=collect)
    for path, value in found.items():
        memo[keys[path]] = value
    memo_path.parent.mkdir(parents=True, exist_ok=True)
    write_json(memo_path, memo)
    usable = []
    for c in clips:
        value = memo[keys[str(c.path)]] if str(c.path) in keys else unreadable[str(c.path)]
        if isinstance(value, int):
            usable.append(c)
        else:
            skipped.append((str(c.path), str(value)))
    return usable
