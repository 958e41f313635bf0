"""`tse train ARCH --data DIR -o RUN`: train a model on a `tse mix` set (single process or under torchrun)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from tse_cli.commands import VERBOSE_OPTION, fail


def register(app: typer.Typer) -> None:
    """Add `tse train` to the app."""
    app.command("train", no_args_is_help=True)(train)


def train(
    arch: str = typer.Argument(..., help="Architecture, e.g. wavemamba-small (`tse models list --architectures`)."),
    data: Path = typer.Option(
        None, "--data", "-d", metavar="DIR", help="Data folder made by `tse mix` (train and val splits)."
    ),
    out: Path = typer.Option(
        ..., "--output", "-o", metavar="DIR", help="Run folder: train.json, metrics.jsonl, last/, best/."
    ),
    config_file: Path = typer.Option(
        None, "--config", metavar="FILE", help="JSON or TOML file of settings (e.g. a run's train.json)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Start afresh in a folder that holds a run, moving that run to OUT/previous/ first."
    ),
    epochs: int = typer.Option(None, metavar="N", help="Epochs (default 150)."),
    max_steps: int = typer.Option(None, metavar="N", help="Stop after this many optimizer steps (default: no limit)."),
    batch_size: int = typer.Option(None, metavar="N", help="Examples per step and process (default 16)."),
    lr: float = typer.Option(
        None, metavar="RATE", help="Learning rate (default 5e-4); with --resume, the new rate from there on."
    ),
    grad_clip: float = typer.Option(None, metavar="NORM", help="Max gradient norm, 0 = off (default 0.5)."),
    seed: int = typer.Option(None, metavar="N", help="Random seed (default 0)."),
    num_workers: int = typer.Option(None, metavar="N", help="Data-loading processes per training process (default 2)."),
    save_every: int = typer.Option(None, metavar="STEPS", help="Steps between checkpoints in RUN/last (default 1000)."),
    device: str = typer.Option(None, help="auto | cpu | cuda | cuda:N (default auto)."),
    model_arg: list[str] = typer.Option(
        None,
        "--model-arg",
        "-a",
        metavar="NAME=VALUE",
        help="Model constructor override, e.g. enc_dim=128 (repeatable).",
    ),
    old_model_arg: list[str] = typer.Option(
        None, "-m", hidden=True, help="Deprecated spelling of --model-arg (-m is --model in every other command)."
    ),
    task_arg: list[str] = typer.Option(
        None, "--task-arg", "-t", metavar="NAME=VALUE", help="Family option, e.g. crop_seconds=2 (repeatable)."
    ),
    set_: list[str] = typer.Option(
        None, "--set", metavar="NAME=VALUE", help="Any other setting, e.g. fixed_epochs=10 (see docs/training.md)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display (errors only)."),
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Train ARCH on a `tse mix` data folder; the paper's hyper-parameters unless overridden.

    Under `torchrun --nproc-per-node N -m tse_cli train ...` each process trains on its shard with
    DistributedDataParallel (NCCL on GPUs, gloo on CPUs). A folder that holds a run is refused unless --resume
    or --overwrite is given. Ctrl-C, SIGTERM or SIGHUP stop after the current step, saving OUT/last (exit 130,
    143, 129); a second one stops at once. Exit 2: bad settings or folder; 1: training failed.
    """
    from tse_cli import console, signals

    if resume and overwrite:
        raise fail("--resume and --overwrite exclude each other", code=2)
    if old_model_arg:
        console.warn("-m for --model-arg is deprecated (-m means --model elsewhere); write -a or --model-arg")
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
                [*(old_model_arg or []), *(model_arg or [])],
                task_arg or [],
                set_ or [],
            )
            _check(config)
        except ValueError as err:
            raise fail(str(err), code=2) from None
        if resume and (finished := _finished(config)):
            console.note(f"nothing to do: the run in {config.out} {finished}")
            return
        _run(config, resume, overwrite, resume and lr is not None, quiet)


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


def _check(config: Any) -> None:
    """Usage checks that need no data (ValueError): the device, the family options, the model arguments and
    whether the model fits this machine (also for a finished run, which is then left alone)."""
    from tse_cli.models.budget import TRAINING_COPIES, check_fits
    from tse_cli.runinfo import report_run
    from tse_cli.train.loop import pick_device, task_options
    from tse_cli.train.run_folder import LAST
    from tse_cli.train.tasks import get_task

    device = pick_device(config.device)
    task_options(get_task(config.arch), config.task)
    check_fits(config.arch, config.model_args, device, copies=TRAINING_COPIES, origin="model_args")
    model = _meta_model(config.arch, config.model_args)
    weights = Path(config.out) / LAST / "model.safetensors"
    report_run(model, device, spec=config.arch, weights=weights if weights.is_file() else None, grad=True)


def _meta_model(arch: str, model_args: dict[str, Any]) -> Any:
    """`arch` built with `model_args` on the meta device (no memory); a bad argument is a ValueError."""
    import torch

    from tse_cli.models import create

    with torch.device("meta"):
        return create(arch, **model_args)


def _finished(config: Any) -> str | None:
    """Why a run folder's last checkpoint needs no more training (max_steps or epochs reached), else None."""
    from tse_cli.checkpoint import CheckpointError, read_config
    from tse_cli.train.run_folder import LAST

    try:
        done = read_config(Path(config.out) / LAST).get("training", {})
    except CheckpointError:
        return None  # no checkpoint yet: training says what is wrong
    step, epoch = done.get("step", 0), done.get("epoch", 0)
    if config.max_steps and step >= config.max_steps:
        return f"already reached max_steps {config.max_steps} (step {step}); raise --max-steps to train on"
    if epoch >= config.epochs:
        return f"already trained {epoch} epochs (--epochs {config.epochs}); raise --epochs to train on"
    return None


class _TrainProgress:
    """The `progress(event, **values)` callback of `tse_cli.train.loop.train`: a phase per epoch (steps, the
    running mean loss and the learning rate) and per validation (examples), and a note when a signal asks training
    to stop, through `tse_cli.console`."""

    def __init__(self, display: Any, epochs: int, out: str) -> None:
        self.display, self.epochs, self.out = display, epochs, out
        self.phase: Any = None
        self.losses: list[float] = []

    def __call__(self, event: str, **values: Any) -> None:
        if event == "epoch":
            self._end()
            self.losses = []
            label = f"epoch {values['epoch'] + 1}/{self.epochs}"
            self.phase = self.display.phase(label, total=values["batches"], unit="steps", completed=values["done"])
        elif event == "step":
            self.losses.append(values["loss"])
            mean = sum(self.losses) / len(self.losses)
            self.phase.advance(1, info=f"loss {mean:.3f}, lr {values['lr']:.1e}")
        elif event == "validating":
            self._end()
            self.phase = self.display.phase("validation", total=values["examples"], unit="examples")
        elif event == "validated":
            self.phase.advance(values["examples"])
        elif event == "val":
            self._end(f"SI-SNRi {values['si_snri']:.2f} dB, SNRi {values['snri']:.2f} dB")
        elif event == "signal":
            import signal

            from tse_cli import console
            from tse_cli.train.run_folder import LAST

            name = signal.Signals(values["signum"]).name
            console.note(f"{name}: stopping after this step, saving {self.out}/{LAST} (again: stop at once)")

    def _end(self, info: str | None = None) -> None:
        if self.phase is not None:
            self.phase.done(info)
            self.phase = None


def _run(config: Any, resume: bool, overwrite: bool, reset_lr: bool, quiet: bool) -> None:
    """Train with progress on rank 0 (`tse_cli.console`; shown from the first epoch on, so that errors found while
    checking print as one line); errors: exit code 2 for the settings, data or run folder (nothing was written),
    1 for a failed run, 128 + N for signal N (see `tse_cli.signals`)."""
    import os

    from tse_cli import console, signals
    from tse_cli.errors import os_reason
    from tse_cli.train.loop import TrainingError, train
    from tse_cli.train.run_folder import LAST, RunFolderError

    show = not quiet and os.environ.get("RANK", "0") == "0"
    try:
        with console.progress(quiet=not show) as display:
            progress = _TrainProgress(display, config.epochs, config.out)
            result = train(config, resume, progress, reset_lr, overwrite, stop_on_signal=True)
    except (RunFolderError, ValueError) as err:  # settings, data, model sizes, the folder: nothing was written
        raise fail(str(err), code=2) from None
    except TrainingError as err:
        raise fail(str(err)) from None
    except signals.Interrupted as err:
        kept = _kept(Path(config.out) / LAST)
        raise fail(f"interrupted by {signals.describe(err)}: {kept}", signals.exit_code(err)) from None
    except OSError as err:
        where = err.filename or config.out
        raise fail(f"{where}: cannot write the run ({os_reason(err)}); {_kept(Path(config.out) / LAST)}") from None
    if show:
        console.note(
            f"done: {result['step']} steps, best validation SI-SNRi {result['best_si_snri']:.2f} dB; "
            f"checkpoints in {config.out}/best and {config.out}/last"
        )


def _kept(last: Path) -> str:
    """What an interrupted or failed run leaves to resume from."""
    return f"{last} holds the last checkpoint, --resume continues from it" if last.is_dir() else "nothing was saved yet"
