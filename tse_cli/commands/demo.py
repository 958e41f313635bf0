"""`tse demo` (not written yet)."""

import typer


def register(app: typer.Typer) -> None:
    """Add this subcommand to the app (nothing yet)."""
