"""`tse models list|download|info`: the pretrained-weights registry (weights.toml) from the command line."""

from __future__ import annotations

import json
from typing import Any

import typer

from tse_cli.commands import fail

models_app = typer.Typer(
    name="models",
    help="List, download and describe pretrained models (the weights.toml registry).",
    no_args_is_help=True,
)


@models_app.command("list")
def list_models(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
    show_architectures: bool = typer.Option(
        False, "--architectures", help="List the architectures (what `tse train` accepts) instead of the models."
    ),
) -> None:
    """List the registry: name, architecture, sample rate, whether it is cached here, license, description.

    With --architectures: every architecture name, its sample rate, clue, class limit and whether `tse train`
    trains it.
    """
    from tse_cli.weights import WeightsError, cache_state, load_registry

    if show_architectures:
        _list_architectures(as_json)
        return
    try:
        entries = load_registry()
    except WeightsError as err:
        raise fail(str(err)) from None
    rows = [
        {
            "name": e.name,
            "architecture": e.architecture,
            "sample_rate": e.sample_rate,
            "cached": cache_state(e),
            "license": e.license,
            "description": e.description,
        }
        for e in entries.values()
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    headers = {"name": "name", "architecture": "architecture", "sample_rate": "rate (Hz)", "cached": "cached"}
    headers["license"] = "license"
    _print_table("Pretrained models (weights.toml)", "`tse models info NAME` tells more", headers, rows)


def _list_architectures(as_json: bool) -> None:
    from tse_cli.models import ARCHITECTURES
    from tse_cli.train.tasks import family_of

    rows = [
        {
            "architecture": name,
            "sample_rate": entry.sample_rate,
            "clue": entry.clue_kind,
            "max_classes": entry.max_classes,
            "trainable": family_of(name) is not None,
            "arguments": entry.defaults,
        }
        for name, entry in sorted(ARCHITECTURES.items())
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        row["max_classes"] = "no limit" if row["max_classes"] is None else row["max_classes"]
        row["trainable"] = "yes" if row["trainable"] else "no (load published weights)"
    headers = {"architecture": "architecture", "sample_rate": "rate (Hz)", "clue": "clue"}
    headers |= {"max_classes": "classes at once", "trainable": "tse train"}
    for row in rows:
        row["arguments"] = ", ".join(f"{k}={v}" for k, v in row["arguments"].items()) or "as published"
    _print_table("Architectures", "`tse models info ARCH` tells more", headers, rows, last="arguments")


def _print_table(
    title: str, caption: str, headers: dict[str, str], rows: list[dict[str, Any]], last: str = "description"
) -> None:
    """Rows as a table on stdout: the `headers` columns keep their width, a last column (`last`) gives way."""
    from rich.table import Table

    from tse_cli import console

    table = Table(title=title, caption=caption)
    cells = [[str(row[key]) for key in headers] for row in rows]
    for i, column in enumerate(headers.values()):
        table.add_column(column, no_wrap=True, min_width=max(len(column), *(len(c[i]) for c in cells)))
    table.add_column(last, no_wrap=True, overflow="ellipsis", max_width=48)
    for row, values in zip(rows, cells, strict=True):
        table.add_row(*values, str(row[last]))
    console.out().print(table)


@models_app.command("download")
def download(
    names: list[str] = typer.Argument(None, help="Registry names, or Hub repos as owner/repo or owner/repo@revision."),
    all_: bool = typer.Option(False, "--all", help="Download every registry entry (for container builds)."),
) -> None:
    """Download (and convert, for published formats) models into the cache; prints each checkpoint directory.

    Set HF_HOME first to choose where the cache goes (e.g. in a container image), and HF_HUB_OFFLINE=1 at run time.
    """
    from tse_cli.weights import UnknownModelError, WeightsError, load_registry, resolve

    if bool(names) == all_:
        raise fail("give model NAMEs or --all (not both)", code=2)
    try:
        registry = load_registry()
    except WeightsError as err:
        raise fail(str(err)) from None
    failed, unknown = 0, 0
    for name in list(registry) if all_ else names:
        try:
            folder = resolve(name, registry)
        except WeightsError as err:
            typer.echo(f"error: {err}", err=True)
            failed += 1
            unknown += isinstance(err, UnknownModelError)
            continue
        typer.echo(f"{name}: {folder}")
    if failed:  # a name that names nothing is a usage error (2); one that cannot be had, 1
        raise typer.Exit(2 if unknown else 1)


@models_app.command("info")
def info(
    name: str = typer.Argument(..., help="A registry name, an architecture name or a checkpoint directory."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object instead of a table."),
) -> None:
    """Describe a model: parameters, GMAC/s, latency, sample rate, classes, source and license (no download)."""
    from tse_cli.checkpoint import CheckpointError
    from tse_cli.model_info import describe
    from tse_cli.weights import UnknownModelError, WeightsError

    try:
        details = describe(name)
    except UnknownModelError as err:
        raise fail(str(err), code=2) from None
    except (WeightsError, CheckpointError, ValueError) as err:
        raise fail(str(err)) from None
    if as_json:
        typer.echo(json.dumps(details, indent=2))
        return
    from rich.table import Table

    from tse_cli import console

    table = Table(title=f"tse model {name}", show_header=False)
    table.add_column("field", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in details.items():
        table.add_row(key.replace("_", " "), _cell(value))
    console.out().print(table)


def _cell(value: Any) -> str:
    """A table cell: thousands separators, 3 decimals, one `key: value` line per dict item."""
    if isinstance(value, dict):
        return "\n".join(f"{k}: {v}" for k, v in value.items()) or "{}"
    if isinstance(value, bool) or value is None:
        return "n/a" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.3f}"
    return str(value)


def register(app: typer.Typer) -> None:
    """Add `tse models` to the app."""
    app.add_typer(models_app)
