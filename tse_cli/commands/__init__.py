"""One module per `tse` subcommand; each exposes `register(app: typer.Typer) -> None`. Shared here: `fail`."""

import typer


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `error: message` on stderr and return the Exit to raise (one line, no traceback)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)
