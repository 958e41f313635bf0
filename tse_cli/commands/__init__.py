"""One module per `tse` subcommand; each exposes `register(app: typer.Typer) -> None`."""
