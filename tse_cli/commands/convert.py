"""`tse convert FORMAT ...`: turn published upstream checkpoints into tse checkpoint directories.

One subcommand per published format; each collects the files by role and hands them to `write_converted`,
which runs the format's converter (`tse_cli.weights.FORMATS`) and writes DIR atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from tse_cli.commands import fail

convert_app = typer.Typer(
    name="convert",
    help="Convert published checkpoints (torch pickles, read with weights_only=True) into checkpoint directories.",
    no_args_is_help=True,
)

OUT_OPTION = typer.Option(
    ..., "-o", "--output", metavar="DIR", help="Checkpoint directory to write (config.json + model.safetensors)."
)
OVERWRITE_OPTION = typer.Option(False, "--overwrite", help="Replace DIR if it already exists.")


def write_converted(
    fmt: str, files: dict[str, Path], out: Path, overwrite: bool, about: dict[str, Any] | None = None
) -> None:
    """Check the inputs, convert `files` (role -> path) of format `fmt` and write `out` atomically; `about` goes
    into its config.json's `converted_from` (`tse_cli.weights.convert_files`).

    Every failure is one line on stderr and exit code 1 (2 for a refused overwrite); nothing is left at `out`.
    """
    from tse_cli.weights import WeightsError, convert_files

    for path in files.values():
        if not path.is_file():
            raise fail(f"{path}: no such file")
    check_free(out, overwrite)
    try:
        folder = convert_files(fmt, files, out, about=about)
    except WeightsError as err:
        raise fail(str(err)) from None
    typer.echo(f"wrote {folder}")


def check_free(out: Path, overwrite: bool) -> None:
    """Refuse to replace an existing `out` without `--overwrite` (exit 2)."""
    if out.exists() and not overwrite:
        raise fail(f"{out}: already exists (use --overwrite to replace it)", code=2)


@convert_app.command("waveformer")
def waveformer(
    source: Path = typer.Argument(
        ...,
        help="A published checkpoint (default_ckpt.pt), or the authors' experiments: experiments.zip, its unzipped "
        "folder, or one experiment's folder of <epoch>.pt files.",
        metavar="SOURCE",
    ),
    config: Path | None = typer.Option(
        None,
        "--config",
        metavar="FILE",
        help="The published config JSON (default_config.json) \\[default for experiments: <exp>/config.json].",
    ),
    experiment: str | None = typer.Option(
        None, "--experiment", help="Which experiment of a zip or folder of several, e.g. dcc_tf_ckpt_E512_10_D256_1."
    ),
    epoch: int | None = typer.Option(
        None, "--epoch", min=0, help="Convert this epoch \\[default: the best by validation SI-SNRi, as eval.py]."
    ),
    output: Path = OUT_OPTION,
    overwrite: bool = OVERWRITE_OPTION,
) -> None:
    """Convert a published Waveformer checkpoint (default_ckpt.pt + default_config.json), or the best epoch of one
    of the authors' experiments (experiments.zip), into DIR."""
    if not source.exists():
        raise fail(f"{source}: no such file or folder")
    if source.is_file() and source.suffix.lower() != ".zip":
        if config is None:
            raise fail(f"{source}: a single checkpoint needs --config (its published config.json)", code=2)
        if experiment is not None or epoch is not None:
            raise fail("--experiment and --epoch are for experiment folders and experiments.zip", code=2)
        files = {"checkpoint_path": source, "config_path": config}
        write_converted("waveformer-published", files, output, overwrite)
        return
    import tempfile

    from tse_cli.models.published import PublishedFormatError
    from tse_cli.models.waveformer_experiments import select_epoch

    check_free(output, overwrite)
    with tempfile.TemporaryDirectory(prefix="tse-convert-") as workdir:
        try:
            chosen = select_epoch(source, Path(workdir), experiment, epoch, config)
        except PublishedFormatError as err:
            raise fail(str(err)) from None
        how = f"best validation {chosen.metric} {chosen.value:.2f}" if chosen.value is not None else "as asked"
        typer.echo(f"{chosen.experiment}: epoch {chosen.epoch} of {chosen.last_epoch} ({how})", err=True)
        files = {"checkpoint_path": chosen.checkpoint, "config_path": chosen.config}
        write_converted("waveformer-published", files, output, overwrite, about=chosen.describe())


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
