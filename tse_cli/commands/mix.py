"""`tse mix`: build training sets from FSD Kaggle 2018 + TAU 2019 (or a synthetic stand-in), re-render specs.

    tse mix --fsd FSD --tau TAU -o OUT --recipe dpm-tse|waveformer [--split S] [--count N] [--seed S] [--jobs N]
    tse mix render SPEC                 # one .json (dpm-tse) or .jams (waveformer) specification
    tse mix render --jams DIR -o OUT    # a tree of Scaper specs, e.g. the authors' FSDSoundScapes jams/
    tse mix --synthetic -o DIR          # a procedural FSD/TAU corpus in the downloaded layouts

Only typer/rich are imported at module level; the data modules load inside the commands.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from tse_cli import signals
from tse_cli.commands import fail

SPLIT_CHOICES = ("train", "val", "test", "all")
PHASE_LABELS = {"scan": ("decoding sources", "sources"), "mix": ("rendering mixtures", "mixtures")}


def _run_with_progress(run) -> object:
    """Call `run(on_start, on_result)` with a progress phase per stage (`tse_cli.console`); returns what `run`
    returns. Nothing is displayed before the first stage, so errors found while validating print as one line."""
    from tse_cli import console

    with console.progress() as display:
        current: list = []

        def on_start(phase: str, total: int) -> None:
            if current:
                current.pop().done()
            label, unit = PHASE_LABELS[phase]
            current.append(display.phase(label, total=total, unit=unit))

        def on_result(result) -> None:
            current[-1].advance(1)
            if result is not None and result.error:
                console.error(f"{result.split}/{result.name}: {result.error}")

        return run(on_start, on_result)


def _interruptible(run: Callable[[], Any]) -> Any:
    """`run()` under `signals.cleanup_first`: SIGINT, SIGTERM and SIGHUP raise `Interrupted` (exit 128 + N), also
    when the signal reached the worker processes first and the pool broke before the parent noticed it."""
    from concurrent.futures.process import BrokenProcessPool

    with signals.cleanup_first():
        try:
            return run()
        except BrokenProcessPool:
            signals.check()
            raise


def _print_summary(summary, out: Path) -> None:
    from rich.table import Table

    from tse_cli import console
    from tse_cli.classes import FSD_CLASSES

    table = Table(title=f"tse mix: {out}", show_edge=False)
    table.add_column("split")
    table.add_column("mixtures", justify="right")
    for split, n in summary.per_split.items():
        table.add_row(split, str(n))
    table.add_row("rendered now / already done", f"{summary.rendered} / {summary.resumed}")
    console.err().print(table)
    counts = Table(title="per class (targets for dpm-tse, events for waveformer)", show_edge=False, show_header=False)
    for _ in range(3):
        counts.add_column()
        counts.add_column(justify="right")
    cells = [(name, str(summary.per_class.get(name, 0))) for name in FSD_CLASSES]
    for i in range(0, len(cells), 3):
        row = [x for cell in cells[i : i + 3] for x in cell]
        counts.add_row(*row, *[""] * (6 - len(row)))
    console.err().print(counts)
    if summary.missing_sources:
        n = len(summary.missing_sources)
        head = ", ".join(p.name for p in summary.missing_sources[:5]) + (" ..." if n > 5 else "")
        console.warn(f"missing sources (listed in metadata, not on disk): {n}: {head}")
    if summary.extra_sources:
        console.note(f"unlisted audio files ignored: {summary.extra_sources}")
    if summary.skipped_sources:
        console.warn(f"skipped sources: {len(summary.skipped_sources)}")
        for path, reason in summary.skipped_sources[:10]:
            console.note(f"  {path}: {reason}")
        if len(summary.skipped_sources) > 10:
            console.note(f"  ... and {len(summary.skipped_sources) - 10} more (see summary.json)")
    if summary.clipped:
        worst = sorted(summary.clipped, key=lambda r: -r.peak)[:5]
        listing = ", ".join(f"{r.split}/{r.name} (peak {r.peak:.2f}, {r.clipped} samples)" for r in worst)
        console.warn(f"clipped mixtures: {len(summary.clipped)} (use --normalize): {listing}")
    else:
        console.note("clipped mixtures: 0")
    if summary.failed:
        console.error(f"failed mixtures: {len(summary.failed)}")
        for r in summary.failed[:10]:
            console.note(f"  {r.split}/{r.name}: {r.error}")


def _write_summary_json(summary, out: Path) -> None:
    from tse_cli.atomic import write_json

    write_json(
        out / "summary.json",
        {
            "mixtures": dict(summary.per_split),
            "rendered": summary.rendered,
            "already_done": summary.resumed,
            "per_class": dict(sorted(summary.per_class.items())),
            "skipped_sources": [{"path": p, "reason": r} for p, r in summary.skipped_sources],
            "missing_sources": [str(p) for p in summary.missing_sources],
            "clipped": [
                {"split": r.split, "name": r.name, "peak": r.peak, "samples": r.clipped} for r in summary.clipped
            ],
            "failed": [{"split": r.split, "name": r.name, "error": r.error} for r in summary.failed],
            "seconds": {"scan": summary.scan_seconds, "mix": summary.mix_seconds},
        },
    )


def _finish(summary, out: Path) -> None:
    _write_summary_json(summary, out)
    _print_summary(summary, out)
    if summary.failed:
        raise typer.Exit(1)


def _synthetic(out: Path, seed: int, train: int, test: int, dev: int, evaluation: int, seconds: float) -> None:
    from tse_cli import console
    from tse_cli.data.synthetic import CorpusError, SyntheticSize, corpus_files, write_corpus

    for name, value in (("--clips-per-class", train), ("--test-clips-per-class", test)):
        if value < 2:
            raise fail(f"{name} must be at least 2 (each class needs a same-class reference clip)", 2)
    if dev < 1 or evaluation < 1 or seconds <= 0:
        raise fail("--backgrounds and --background-seconds must be positive", 2)
    size = SyntheticSize(train, test, dev, evaluation, seconds)
    try:
        with console.progress() as display:
            phase = display.phase("writing synthetic corpus", total=corpus_files(size), unit="files")
            counts = write_corpus(out, size, seed, progress=phase.advance)
    except CorpusError as err:
        raise fail(str(err), 2) from None
    console.note(
        f"synthetic corpus in {out}: FSD {counts['fsd_train']} train + {counts['fsd_test']} test clips, "
        f"TAU {counts['tau_development']} development + {counts['tau_evaluation']} evaluation backgrounds"
    )
    console.note(f"next: tse mix --fsd {out / 'fsd'} --tau {out / 'tau'} -o SET --recipe waveformer --count 200")


def register(app: typer.Typer) -> None:
    """Add `tse mix` (a group: the callback builds sets, `render` re-renders specifications)."""
    mix_app = typer.Typer(
        name="mix",
        help="Build training mixtures from FSD Kaggle 2018 + TAU 2019 (or --synthetic), exactly reproducible.",
        no_args_is_help=False,
        rich_markup_mode="rich",
    )

    @mix_app.callback(invoke_without_command=True)
    def mix(
        ctx: typer.Context,
        fsd: Path | None = typer.Option(
            None, "--fsd", metavar="DIR", help="FSD Kaggle 2018 folder (audio_train/test + meta)."
        ),
        tau: Path | None = typer.Option(None, "--tau", metavar="DIR", help="TAU Urban Acoustic Scenes 2019 folder(s)."),
        out: Path | None = typer.Option(None, "-o", "--output", metavar="DIR", help="Output folder (resumable)."),
        recipe: str = typer.Option("dpm-tse", "--recipe", help="dpm-tse (16 kHz, 10 s) or waveformer (44.1 kHz, 6 s)."),
        split: str = typer.Option("all", "--split", help="train, val, test or all."),
        count: int | None = typer.Option(None, "--count", min=1, help="Mixtures per split (default: published)."),
        seed: int = typer.Option(0, "--seed", help="Same seed, same bytes."),
        jobs: int | None = typer.Option(
            None, "--jobs", "-j", min=1, help="Processes that mix, this one included (default: CPUs)."
        ),
        normalize: bool | None = typer.Option(
            None,
            "--normalize/--no-normalize",
            help="Scale a mixture that would clip, with its targets, by one recorded gain "
            "(default: off for dpm-tse as published, on for waveformer as Scaper).",
        ),
        stems: bool = typer.Option(False, "--stems", help="dpm-tse: also write background and interferers."),
        cache_dir: Path | None = typer.Option(
            None, "--cache-dir", metavar="DIR", help="Decoded-source cache (default OUT/.cache)."
        ),
        synthetic: bool = typer.Option(False, "--synthetic", help="Write a synthetic FSD/TAU corpus to -o instead."),
        clips_per_class: int = typer.Option(6, "--clips-per-class", help="--synthetic: FSD train clips per class."),
        test_clips_per_class: int = typer.Option(
            2, "--test-clips-per-class", help="--synthetic: test clips per class."
        ),
        backgrounds: int = typer.Option(12, "--backgrounds", help="--synthetic: TAU development files."),
        eval_backgrounds: int = typer.Option(4, "--eval-backgrounds", help="--synthetic: TAU evaluation files."),
        background_seconds: float = typer.Option(10.0, "--background-seconds", help="--synthetic: length of each."),
    ) -> None:
        """Build a mixture set (or, with --synthetic, a source corpus)."""
        if ctx.invoked_subcommand is not None:
            return
        if out is None:
            raise fail("missing -o/--out", 2)
        if synthetic:
            _synthetic(
                out, seed, clips_per_class, test_clips_per_class, backgrounds, eval_backgrounds, background_seconds
            )
            return
        if fsd is None or tau is None:
            raise fail("--fsd and --tau are required (or --synthetic to make a corpus)", 2)
        if split not in SPLIT_CHOICES:
            raise fail(f"--split must be one of {', '.join(SPLIT_CHOICES)}, got {split!r}", 2)
        from tse_cli.data.build import SPLITS, Options, build
        from tse_cli.data.workers import environment_jobs
        from tse_cli.errors import DataError

        try:
            opts = Options(
                recipe, fsd, tau, out, SPLITS if split == "all" else (split,), count, seed,
                jobs or environment_jobs(), normalize, cache_dir, stems,
            )  # fmt: skip
            summary = _interruptible(lambda: _run_with_progress(lambda s, r: build(opts, s, r)))
        except DataError as err:
            raise fail(str(err), 2) from None
        except KeyboardInterrupt as err:
            message = "interrupted: finished mixtures are kept, rerun the same command to resume"
            raise fail(message, signals.exit_code(err)) from None
        _finish(summary, out)

    @mix_app.command("render")
    def render(
        spec: Path | None = typer.Argument(None, help="One specification: .json (dpm-tse) or .jams (waveformer)."),
        jams: Path | None = typer.Option(None, "--jams", metavar="DIR", help="Render every .jams under this folder."),
        fsd: Path | None = typer.Option(
            None, "--fsd", metavar="DIR", help="Your FSD Kaggle 2018 copy (to resolve sources)."
        ),
        tau: Path | None = typer.Option(None, "--tau", metavar="DIR", help="Your TAU 2019 copy (to resolve sources)."),
        out: Path | None = typer.Option(
            None, "-o", "--output", metavar="DIR", help="Output set folder (default: the spec's set)."
        ),
        jobs: int | None = typer.Option(
            None, "--jobs", "-j", min=1, help="Processes that render --jams, this one included."
        ),
        normalize: bool | None = typer.Option(
            None, "--normalize/--no-normalize", help="Override the spec's clipping fix (default: as specified)."
        ),
    ) -> None:
        """Re-render one specification, or a tree of Scaper .jams specs (e.g. the published FSDSoundScapes)."""
        from tse_cli import console
        from tse_cli.data.rerender import default_jams_output, render_jams_tree, render_spec
        from tse_cli.data.wavio import SourceError
        from tse_cli.data.workers import environment_jobs
        from tse_cli.errors import DataError

        if (spec is None) == (jams is None):
            raise fail("give either one SPEC file or --jams DIR", 2)
        try:
            if spec is not None:
                if not spec.is_file():
                    raise fail(f"{spec}: no such specification file", 2)
                result, where = render_spec(spec, fsd, tau, out, normalize)
                clip = f", clipped {result.clipped} samples (peak {result.peak:.2f})" if result.clipped else ""
                console.note(f"rendered {result.split}/{result.name} into {where}{clip}")
                return
            if not jams.is_dir():
                raise fail(f"{jams}: no such folder", 2)
            target = out or default_jams_output(jams)
            summary = _interruptible(
                lambda: _run_with_progress(
                    lambda s, r: render_jams_tree(jams, target, fsd, tau, jobs or environment_jobs(), normalize, s, r)
                )
            )
        except (DataError, SourceError, ValueError) as err:
            raise fail(str(err), 2) from None
        except KeyboardInterrupt as err:
            message = "interrupted: finished scenes are kept, rerun the same command to resume"
            raise fail(message, signals.exit_code(err)) from None
        _finish(summary, target)

    app.add_typer(mix_app, name="mix")
