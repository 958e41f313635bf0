"""`tse convert FORMAT ...`: turn published upstream checkpoints into tse checkpoint directories.

One subcommand per published format; each collects the files by role and hands them to `write_converted`,
which runs the format's converter (`tse_cli.weights.FORMATS`) and writes DIR atomically.
"""

from __future__ import annotations

from pathlib import Path

import typer

from tse_cli.commands import fail

convert_app = typer.Typer(
    name="convert",
    help="Convert published checkpoints (torch pickles, read with weights_only=True) into checkpoint directories.",
    no_args_is_help=True,
)

OUT_OPTION = typer.Option(
    ..., "-o", "--output", help="Checkpoint directory to write (config.json + model.safetensors)."
)
OVERWRITE_OPTION = typer.Option(False, "--overwrite", help="Replace DIR if it already exists.")


def write_converted(fmt: str, files: dict[str, Path], out: Path, overwrite: bool) -> None:
    """Check the inputs, convert `files` (role -> path) of format `fmt` and write `out` atomically.

    Every failure is one line on stderr and exit code 1 (2 for a refused overwrite); nothing is left at `out`.
    """
    from tse_cli.weights import WeightsError, convert_files

    for path in files.values():
        if not path.is_file():
            raise fail(f"{path}: no such file")
    if out.exists() and not overwrite:
        raise fail(f"{out}: already exists (use --overwrite to replace it)", code=2)
    try:
        folder = convert_files(fmt, files, out)
    except WeightsError as err:
        raise fail(str(err)) from None
    typer.echo(f"wrote {folder}")


@convert_app.command("waveformer")
def waveformer(
    checkpoint: Path = typer.Argument(..., help="The published checkpoint, e.g. default_ckpt.pt.", metavar="CKPT"),
    config: Path = typer.Option(..., "--config", help="The published config JSON, e.g. default_config.json."),
    output: Path = OUT_OPTION,
    overwrite: bool = OVERWRITE_OPTION,
) -> None:
    """Convert a published Waveformer checkpoint (default_ckpt.pt + default_config.json) into DIR."""
    write_converted("waveformer-published", {"checkpoint_path": checkpoint, "config_path": config}, output, overwrite)


@convert_app.command("dpm-tse")
def dpm_tse(
    checkpoint: Path = typer.Argument(..., help="The published checkpoint, e.g. ckpts/base_v_1000.pt.", metavar="CKPT"),
    vocoder: Path = typer.Option(
        ..., "--vocoder", metavar="FIRST_STAGE", help="The published ckpts/first_stage.pt holding the vocoder."
    ),
    output: Path = OUT_OPTION,
    overwrite: bool = OVERWRITE_OPTION,
) -> None:
    """Convert a published DPM-TSE checkpoint and its HiFi-GAN vocoder (first_stage.pt) into DIR."""
    files = {"checkpoint_path": checkpoint, "first_stage_path": vocoder}
    write_converted("dpm-tse-published", files, output, overwrite)


@convert_app.command("av-sepformer")
def av_sepformer(
    checkpoint: Path = typer.Argument(
        ..., help="A published AV-SepFormer checkpoint (lin9x/AV-Sepformer).", metavar="CKPT"
    ),
    output: Path = OUT_OPTION,
    overwrite: bool = OVERWRITE_OPTION,
) -> None:
    """Convert a published AV-SepFormer checkpoint (16 kHz, lip-embedding clue) into DIR."""
    write_converted("av-sepformer-published", {"checkpoint_path": checkpoint}, output, overwrite)


def register(app: typer.Typer) -> None:
    """Add `tse convert` to the app."""
    app.add_typer(convert_app)
