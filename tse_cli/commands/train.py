"""`tse train ARCH --data DIR -o RUN`: train a model on a `tse mix` set (single process or under torchrun)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from tse_cli.commands import fail


def register(app: typer.Typer) -> None:
    """Add `tse train` to the app."""
    app.command("train", no_args_is_help=True)(train)


def train(
    arch: str = typer.Argument(..., help="Architecture, e.g. wavemamba-small (`tse models list`)."),
    data: Path = typer.Option(None, "--data", "-d", help="Data folder made by `tse mix` (train and val splits)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: train.json, metrics.jsonl, last/, best/."),
    config_file: Path = typer.Option(None, "--config", help="JSON or TOML file of settings (e.g. a run's train.json)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Start afresh in a folder that holds a run, moving that run to OUT/previous/ first."
    ),
    epochs: int = typer.Option(None, help="Epochs (default 150)."),
    max_steps: int = typer.Option(None, help="Stop after this many optimizer steps (default: no limit)."),
    batch_size: int = typer.Option(None, help="Examples per step and process (default 16)."),
    lr: float = typer.Option(None, help="Learning rate (default 5e-4); with --resume, the new rate from there on."),
    grad_clip: float = typer.Option(None, help="Max gradient norm, 0 = off (default 0.5)."),
    seed: int = typer.Option(None, help="Random seed (default 0)."),
    num_workers: int = typer.Option(None, help="Data-loading processes per training process (default 2)."),
    save_every: int = typer.Option(None, help="Steps between checkpoints in RUN/last (default 1000)."),
    device: str = typer.Option(None, help="auto | cpu | cuda | cuda:N (default auto)."),
    model_arg: list[str] = typer.Option(
        None, "--model-arg", "-m", help="Model constructor override NAME=VALUE, e.g. enc_dim=128 (repeatable)."
    ),
    task_arg: list[str] = typer.Option(
        None, "--task-arg", "-t", help="Family option NAME=VALUE, e.g. crop_seconds=2 (repeatable)."
    ),
    set_: list[str] = typer.Option(
        None, "--set", help="Any other setting NAME=VALUE, e.g. fixed_epochs=10 (see docs/training.md)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
) -> None:
    """Train ARCH on a `tse mix` data folder; the paper's hyper-parameters unless overridden.

    Under `torchrun --nproc-per-node N -m tse_cli train ...` each process trains on its shard with
    DistributedDataParallel (NCCL on GPUs, gloo on CPUs). A folder that holds a run is refused unless --resume
    or --overwrite is given. Ctrl-C, SIGTERM or SIGHUP stop after the current step, saving OUT/last (exit 130,
    143, 129); a second one stops at once. Exit 2: bad settings or folder; 1: training failed.
    """
    from rich.console import Console

    from tse_cli import signals

    console = Console(stderr=True)
    if resume and overwrite:
        raise fail("--resume and --overwrite exclude each other", code=2)
    with signals.exit_at_once():  # start-up (torch importing, the checks): nothing to save or clean up yet
        try:
            config = _resolve(
                arch,
                data,
                out,
                config_file,
                resume,
                overwrite,
                {
                    "epochs": epochs,
                    "max_steps": max_steps,
                    "batch_size": batch_size,
                    "lr": lr,
                    "grad_clip": grad_clip,
                    "seed": seed,
                    "num_workers": num_workers,
                    "save_every": save_every,
                    "device": device,
                },
                model_arg or [],
                task_arg or [],
                set_ or [],
            )
        except ValueError as err:
            raise fail(str(err), code=2) from None
        _run(config, resume, overwrite, resume and lr is not None, quiet, console)


def _resolve(
    arch: str,
    data: Path | None,
    out: Path,
    config_file: Path | None,
    resume: bool,
    overwrite: bool,
    options: dict[str, Any],
    model_args: list[str],
    task_args: list[str],
    settings: list[str],
) -> Any:
    """The run's `TrainConfig` from the saved run (with --resume), the config file and the options."""
    from tse_cli.train.config import build_config, parse_assignments, read_config_file
    from tse_cli.train.run_folder import CONFIG_FILE, RunFolderError, refuse_previous
    from tse_cli.train.tasks import get_task

    layers: list[dict[str, Any]] = []
    if resume:
        saved = out / CONFIG_FILE
        if not saved.is_file():
            raise ValueError(f"{saved}: not found, nothing to resume (run without --resume first)")
        layers.append(read_config_file(saved))
        if layers[0].get("arch") != arch:
            raise ValueError(f"{out}: the run trains {layers[0].get('arch')!r}, not {arch!r}")
    else:
        if not overwrite:
            try:
                refuse_previous(out)
            except RunFolderError as err:
                raise ValueError(str(err)) from None
        layers.append(get_task(arch).hyper)
    if config_file is not None:
        layers.append(read_config_file(config_file))
    given = {k: v for k, v in options.items() if v is not None}
    given |= {"arch": arch, "out": str(out)} | ({"data": str(data)} if data is not None else {})
    if model_args:
        given["model_args"] = parse_assignments(model_args, "--model-arg")
    if task_args:
        given["task"] = parse_assignments(task_args, "--task-arg")
    config = build_config(*layers, parse_assignments(settings, "--set"), given)
    if not config.data:
        raise ValueError("no data folder: give --data DIR (or `data` in --config)")
    return config


def _run(config: Any, resume: bool, overwrite: bool, reset_lr: bool, quiet: bool, console: Any) -> None:
    """Train with a rich progress display on rank 0 (shown from the first epoch on, so that errors found while
    checking print as one line); errors: exit code 2 for the settings, data or run folder (nothing was written),
    1 for a failed run, 128 + N for signal N (see `tse_cli.signals`)."""
    import os
    import signal

    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from tse_cli import signals
    from tse_cli.errors import os_reason
    from tse_cli.train.loop import TrainingError, train
    from tse_cli.train.run_folder import LAST, RunFolderError

    show = not quiet and os.environ.get("RANK", "0") == "0"
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    bar = Progress(*columns, TextColumn("{task.fields[info]}"), console=console, disable=not show)
    bar_id = bar.add_task("", total=None, info="")

    def progress(event: str, **values: Any) -> None:
        if event == "epoch":
            bar.start()
            bar.reset(bar_id, total=values["batches"], completed=values["done"])
            bar.update(bar_id, description=f"epoch {values['epoch'] + 1}/{config.epochs}")
        elif event == "step":
            bar.update(bar_id, advance=1, info=f"loss {values['loss']:.3f}  lr {values['lr']:.1e}")
        elif event == "val" and show:
            bar.console.print(
                f"validation: SI-SNRi {values['si_snri']:.2f} dB, SNRi {values['snri']:.2f} dB", highlight=False
            )
        elif event == "signal":
            name = signal.Signals(values["signum"]).name
            console.print(f"{name}: stopping after this step, saving {config.out}/{LAST} (again: stop at once)")

    def error(message: str, code: int) -> typer.Exit:
        bar.stop()  # the line goes below the bar
        console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
        return typer.Exit(code)

    try:
        result = train(config, resume, progress, reset_lr, overwrite, stop_on_signal=True)
    except (RunFolderError, ValueError) as err:  # settings, data, model sizes, the folder: nothing was written
        raise error(str(err), 2) from None
    except TrainingError as err:
        raise error(str(err), 1) from None
    except signals.Interrupted as err:
        kept = _kept(Path(config.out) / LAST)
        raise error(f"interrupted by {signals.describe(err)}: {kept}", signals.exit_code(err)) from None
    except OSError as err:
        where = err.filename or config.out
        raise error(f"{where}: cannot write the run ({os_reason(err)}); {_kept(Path(config.out) / LAST)}", 1) from None
    finally:
        bar.stop()
    if show:
        console.print(
            f"done: {result['step']} steps, best validation SI-SNRi {result['best_si_snri']:.2f} dB; "
            f"checkpoints in {config.out}/best and {config.out}/last",
            highlight=False,
        )


def _kept(last: Path) -> str:
    """What an interrupted or failed run leaves to resume from."""
    return f"{last} holds the last checkpoint, --resume continues from it" if last.is_dir() else "nothing was saved yet"
