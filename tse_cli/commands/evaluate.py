"""`tse eval --data DIR (--model NAME | --checkpoint DIR)`: SI-SNRi and SNRi of a model on a `tse mix` split."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import typer

from tse_cli.commands import VERBOSE_OPTION, fail


def register(app: typer.Typer) -> None:
    """Add `tse eval` to the app."""
    app.command("eval", no_args_is_help=True)(evaluate)


def evaluate(
    data: Path = typer.Option(
        ..., "--data", "-d", metavar="DIR", help="Data folder made by `tse mix` (either recipe)."
    ),
    model: str = typer.Option(None, "--model", "-m", help="Registry name (`tse models list`)."),
    checkpoint: Path = typer.Option(
        None, "--checkpoint", metavar="DIR", help="Checkpoint directory (e.g. a run's best/)."
    ),
    split: str = typer.Option("test", help="Split to evaluate."),
    out: Path = typer.Option(
        None, "--output", "-o", metavar="FILE", help="Write results: .json (summary + examples) or .csv (examples)."
    ),
    limit: int = typer.Option(0, help="Only the first N examples (0: all)."),
    batch_size: int = typer.Option(1, help="Examples per forward pass."),
    num_workers: int = typer.Option(0, help="Data-loading processes."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    task_arg: list[str] = typer.Option(
        None, "--task-arg", "-t", metavar="NAME=VALUE", help="Family option (repeatable)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the table, no progress."),
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Measure SI-SNRi and SNRi (mean, median, per class) of a model on a split of a data folder.

    Exit codes: 0 done, 1 the model cannot be loaded or evaluated, 2 usage error (options, device, data folder).
    """
    from tse_cli import console
    from tse_cli.devices import DeviceError
    from tse_cli.errors import DataError
    from tse_cli.train.config import ConfigError
    from tse_cli.weights import UnknownModelError

    if (model is None) == (checkpoint is None):
        raise fail("give exactly one of --model NAME or --checkpoint DIR", code=2)
    if out is not None and out.suffix not in (".json", ".csv"):
        raise fail(f"{out}: --out must end in .json or .csv", code=2)
    try:
        summary, records, name = _measure(
            data,
            model or str(checkpoint),
            split,
            limit,
            batch_size,
            num_workers,
            device,
            task_arg or [],
            quiet,
        )
    except (ConfigError, DataError, DeviceError, UnknownModelError) as err:
        raise fail(str(err), code=2) from None
    except (ValueError, OSError) as err:  # one line, never wrapped or read as rich markup
        raise fail(str(err)) from None
    console.out().print(_table(summary, f"{name} on {data} ({split})"))
    if out is not None:
        _write_atomic(out, _render(out.suffix, summary, records, name, data, split))
        console.note(f"results written to {out}")


def _measure(
    data: Path,
    name: str,
    split: str,
    limit: int,
    batch_size: int,
    num_workers: int,
    device: str,
    task_args: list[str],
    quiet: bool,
) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
    """Load the model and its task, validate the split, evaluate every example; (summary, records, model name)."""
    from tse_cli import console
    from tse_cli.runinfo import report_run
    from tse_cli.train.config import parse_assignments
    from tse_cli.train.evaluation import evaluate, split_loader
    from tse_cli.train.loop import pick_device, task_options
    from tse_cli.train.metrics import summarize
    from tse_cli.train.tasks import get_task
    from tse_cli.weights import load_model

    torch_device = pick_device(device)
    net = load_model(name, device=str(torch_device))
    report_run(net, torch_device, spec=name)
    task = get_task(net.arch)
    options = task_options(task, parse_assignments(task_args, "--task-arg"))
    task.validate(data, (split,))
    loader = split_loader(task, data, split, options, batch_size, num_workers, limit)
    with console.progress(quiet=quiet) as display:
        phase = display.phase("evaluating", total=len(loader.dataset), unit="examples")
        records = evaluate(net, task, loader, options, torch_device, phase.advance)
    if not records:
        raise ValueError(f"{data}: split {split!r} has no examples")
    return summarize(records), records, name


def _table(summary: dict[str, Any], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for column in ("class", "n", "SI-SNRi mean", "SI-SNRi median", "SNRi mean", "SNRi median"):
        table.add_column(column, justify="left" if column == "class" else "right")

    def row(name: str, stats: dict[str, Any], style: str = "") -> None:
        cells = [f"{stats[m][s]:.2f}" for m in ("si_snri", "snri") for s in ("mean", "median")]
        table.add_row(name, str(stats["count"]), *cells, style=style)

    for label, stats in summary["per_class"].items():
        row(label, stats)
    if summary["count"]:
        row("all", summary, style="bold")
    if summary["nonfinite"]:
        table.caption = f"{summary['nonfinite']} example(s) with non-finite metrics left out"
    return table


def _render(
    suffix: str, summary: dict[str, Any], records: list[dict[str, Any]], name: str, data: Path, split: str
) -> str:
    """The results file text: JSON (summary and per-example records) or CSV (one row per example)."""
    rows = [{"index": i, **record} for i, record in enumerate(records)]
    if suffix == ".json":
        result = {"model": name, "data": str(data), "split": split, "summary": summary, "examples": rows}
        return json.dumps(result, indent=2) + "\n"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["index", "label", "si_snri", "snri", "si_snr", "snr"])
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _write_atomic(path: Path, text: str) -> None:
    from tse_cli.atomic import write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, text)
