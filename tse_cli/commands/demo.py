"""`tse demo [-o DIR]`: extract one class from a fresh synthetic scene with the embedded model, offline."""

from __future__ import annotations

from pathlib import Path

import typer

from tse_cli.commands import fail


def register(app: typer.Typer) -> None:
    """Add `tse demo` to the app."""
    app.command("demo")(demo)


def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", "-o", help="Folder for the wavs and the PNG."),
    seed: int = typer.Option(None, help="Scene seed (default: a fresh one, printed)."),
    target: str = typer.Option(None, "--class", "-c", help="Class to extract (default: a random one)."),
    model: str = typer.Option("demo", help="Registry name or checkpoint directory."),
) -> None:
    """Make a 6 s synthetic scene, extract one class with the demo model, print SI-SNRi, write files to compare."""
    from rich.console import Console

    from tse_cli.train.demo import run_demo

    console = Console()
    try:
        result = run_demo(out, seed=seed, target=target, model=model)
    except (ValueError, OSError) as err:
        raise fail(str(err)) from None
    console.print(
        f"scene (seed {result.seed}): [bold]{result.target}[/bold] + {', '.join(result.others)} over an ambience",
        highlight=False,
    )
    console.print(
        f"extracted {result.target}: SI-SNR {result.si_snr:.2f} dB, "
        f"[bold]SI-SNRi {result.si_snri:.2f} dB[/bold], SNRi {result.snri:.2f} dB",
        highlight=False,
    )
    for name, path in result.files.items():
        console.print(f"  {name:<12} {path}", highlight=False)
