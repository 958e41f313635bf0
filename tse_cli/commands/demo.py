"""`tse demo [-o DIR] [--seed N]`: extract one class from a synthetic scene with the embedded model, offline."""

from __future__ import annotations

from pathlib import Path

import typer

from tse_cli.commands import VERBOSE_OPTION, fail


def register(app: typer.Typer) -> None:
    """Add `tse demo` to the app."""
    app.command("demo")(demo)


def demo(
    out: Path = typer.Option(
        Path("demo_out"), "--output", "-o", metavar="DIR", help="Folder for the wavs, the PNG and demo.json."
    ),
    seed: int = typer.Option(None, "--seed", help="Scene seed [default: 9, the same scene on every run]."),
    target: str = typer.Option(None, "--class", "-c", help="Class to extract [default: the scene's first]."),
    model: str = typer.Option("demo", "--model", "-m", help="Registry name or checkpoint directory."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Write into a folder that holds other files (only the demo's files are replaced)."
    ),
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Make a 6 s synthetic scene, extract one class with the demo model, print SI-SNRi, write files to compare.

    The same scene on every run (seed 9) unless --seed; the model card's held-out mean is printed beside the
    scene's figure. A folder written by an earlier demo is replaced; one holding anything else is refused
    unless --overwrite (exit code 2).
    """
    from tse_cli import console
    from tse_cli.classes import UnknownClassError, class_index
    from tse_cli.train.demo import DEFAULT_SEED, DemoFolderError, run_demo
    from tse_cli.weights import UnknownModelError

    try:
        if target is not None:
            class_index(target)
    except UnknownClassError as err:
        raise fail(str(err), code=2) from None
    try:
        result = run_demo(
            out, seed=DEFAULT_SEED if seed is None else seed, target=target, model=model, overwrite=overwrite
        )
    except (DemoFolderError, UnknownModelError) as err:
        raise fail(str(err), code=2) from None
    except (ValueError, OSError) as err:
        raise fail(str(err)) from None
    show = console.out()
    show.print(f"scene (seed {result.seed}): {result.target} + {', '.join(result.others)} over an ambience")
    show.print(
        f"extracted {result.target}: SI-SNR {result.si_snr:.2f} dB, SI-SNRi {result.si_snri:.2f} dB, "
        f"SNRi {result.snri:.2f} dB"
    )
    if result.card:
        show.print(f"the model's held-out result (model card): {result.card}; single scenes vary, try --seed N")
    if result.replaced:
        console.note(f"replaced the previous demo in {out}")
    for name, path in result.files.items():
        show.print(f"  {name:<12} {path}")
