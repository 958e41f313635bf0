"""`tse classes`: list the 41 sound classes the class-clue models understand."""

from __future__ import annotations

import json

import typer


def classes(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
) -> None:
    """List the 41 FSD Kaggle 2018 classes (names are case-insensitive; spaces or underscores)."""
    from rich.table import Table

    from tse_cli import console
    from tse_cli.classes import FSD_CLASSES

    if as_json:
        typer.echo(json.dumps(list(FSD_CLASSES)))
        return
    table = Table("index", "class", title="Sound classes (FSD Kaggle 2018)")
    for i, name in enumerate(FSD_CLASSES):
        table.add_row(str(i), name)
    console.out().print(table)


def register(app: typer.Typer) -> None:
    app.command("classes")(classes)
