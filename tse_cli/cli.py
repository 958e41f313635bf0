"""The `tse` Typer app: one module per subcommand under `tse_cli.commands`, each with `register(app)`.

Command modules import only typer/rich at module level, so `tse --help`, `tse classes` and shell completion
start fast; torch and the models are imported inside the commands that need them. `tse_cli.parameters` styles
every command (readable placeholders, completion of class, model and architecture names); `tse -v CMD` turns on
the `-v/--verbose` details of any command (`tse_cli.console.detail`).
"""

from __future__ import annotations

import importlib
import os

import typer

from tse_cli import console, parameters

# OpenMP threads that spin while waiting for a busy core make CPU extraction several times slower on shared
# machines; sleeping instead costs nothing measurable when cores are free. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

COMMANDS = ("extract", "stream", "export", "classes", "models", "convert", "mix", "train", "evaluate", "demo", "man")

app = typer.Typer(
    name="tse",
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from tse_cli.versions import describe

        typer.echo(describe())
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_version,
        is_eager=True,
        help="Print the tse, torch (and CUDA), torchaudio and Python versions.",
    ),
    verbose: bool = typer.Option(
        False,
        "--verbose",
        "-v",
        help="Print what a command runs with on stderr: model, weights file, device, scan backend, threads.",
    ),
) -> None:
    """Target sound extraction: give a recording and a clue (a sound class or lip embeddings), get that sound."""
    console.set_verbose(verbose)


for _name in COMMANDS:
    importlib.import_module(f"tse_cli.commands.{_name}").register(app)
parameters.style(app)


def main() -> None:
    """Console-script entry point (a torchaudio that fails to load beside this torch is one line, not a traceback)."""
    from tse_cli.versions import load_problem

    try:
        app()
    except (OSError, RuntimeError, ImportError) as err:
        problem = load_problem(err)
        if problem is None:
            raise
        typer.echo(f"error: {problem}", err=True)
        raise SystemExit(1) from None
