"""The run folder of `tse train`: what it holds, how a new run is kept apart from an old one, and how its
checkpoints survive a kill at any point.

Layout: `train.json` (the settings), `metrics.jsonl`, `last/` (checkpoint + training state), `best/`,
`tensorboard/`; while a checkpoint is replaced, `.NAME.staging/` (the new one, being written) and `.NAME.old/`
(the one it replaces); `previous/STAMP/` holds runs that `--overwrite` set aside.

- A new run never mixes with an old one: `previous_run` names what an earlier run left, and a run that neither
  resumes nor was told to overwrite refuses such a folder. `archive` (`--overwrite`) first moves those entries
  into `previous/STAMP/`, so no trained weights are ever deleted.
- A checkpoint is written into `.NAME.staging/`, flushed to disk and swapped in by `atomic.replace_dir`;
  `checkpoint_to_resume` reads the newest complete one wherever a kill left it (read only), and `recover`
  finishes the swap before the run writes anything.

`RunState` saves and restores a checkpoint with its training state, `MetricsLog` appends to metrics.jsonl,
`resume_point` and `open_folder` are the steps a run takes before its first write.

Crash points (`tse_cli.crashpoints`, in the order a save reaches them): `run:config` (train.json written, no
checkpoint yet), `NAME:staging` (the model files staged, its training state not yet), `NAME:staged` (the
staging folder complete), `NAME:old-moved` (between the two renames), `NAME:swapped` (before `.NAME.old` is
deleted), for NAME `last` and `best`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tse_cli.atomic import complete_copy, old_copy, recover_dir, replace_dir, write_bytes
from tse_cli.checkpoint import CheckpointError, load_weights, write_checkpoint
from tse_cli.crashpoints import crash_point
from tse_cli.errors import as_os_error
from tse_cli.train.config import TrainConfig
from tse_cli.train.state import load_state, save_state

LAST, BEST, CONFIG_FILE, METRICS_FILE, TENSORBOARD, ARCHIVE = (
    "last",
    "best",
    "train.json",
    "metrics.jsonl",
    "tensorboard",
    "previous",
)
CHECKPOINTS = (LAST, BEST)


class RunFolderError(RuntimeError):
    """A run folder that a run must not use as asked (an earlier run in it, or nothing to resume)."""


def staging(out: Path, name: str) -> Path:
    """Where checkpoint `name` of the run in `out` is assembled before it is swapped in."""
    return out / f".{name}.staging"


def entries(out: Path) -> list[str]:
    """The names of everything a run writes in `out` (checkpoints, their staging and old copies, logs)."""
    names = [CONFIG_FILE, METRICS_FILE, TENSORBOARD]
    for name in CHECKPOINTS:
        names += [name, staging(out, name).name, old_copy(out / name).name]
    return names


def previous_run(out: Path) -> list[str]:
    """What an earlier run left in `out` (empty when there is none): e.g. ["train.json", "best"]."""
    return [name for name in entries(out) if os.path.lexists(out / name)]


def refuse_previous(out: Path) -> None:
    """Raise `RunFolderError` if `out` holds an earlier run (a new run must not replace or mix with it)."""
    found = previous_run(out)
    if found:
        shown = ", ".join(f"{n}/" if (out / n).is_dir() else n for n in found)
        raise RunFolderError(
            f"{out}: already holds a run ({shown}); use --resume to continue it, --overwrite to move it to "
            f"{out / ARCHIVE}/ and start afresh, or another folder"
        )


def archive(out: Path) -> Path | None:
    """Move an earlier run's entries into `out/previous/STAMP/` (STAMP: local date and time, made unique);
    returns that folder, or None when there was nothing to move."""
    found = previous_run(out)
    if not found:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, n = out / ARCHIVE / stamp, 1
    while target.exists():
        n += 1
        target = out / ARCHIVE / f"{stamp}-{n}"
    target.mkdir(parents=True)
    for name in found:
        os.replace(out / name, target / name)
    return target


def checkpoint_to_resume(out: Path) -> Path | None:
    """The newest complete `last` checkpoint of the run in `out`, wherever a kill left it (read only).

    None when the run never saved one and left nothing else either (killed before its first checkpoint: it
    restarts from step 0). Raises `RunFolderError` when `last` is gone but the folder holds results that a
    restart would replace (`best/`, metrics)."""
    found = complete_copy(out / LAST, staging(out, LAST))
    if found is not None:
        return found
    kept = [f"{BEST}/"] if complete_copy(out / BEST, staging(out, BEST)) is not None else []
    kept += [METRICS_FILE] if read_metrics(out / METRICS_FILE) else []
    if kept:
        raise RunFolderError(
            f"{out / LAST}: no checkpoint to resume from, and the run folder holds {' and '.join(kept)} that a "
            "restart would replace; use --overwrite to set the old run aside and start afresh"
        )
    return None


def recover(out: Path) -> None:
    """Finish any checkpoint swap of `out` that a kill interrupted (see `checkpoint.recover_dir`)."""
    for name in CHECKPOINTS:
        recover_dir(out / name, staging(out, name))


def prepare_staging(out: Path, name: str) -> Path:
    """An empty `.NAME.staging/` folder in `out` (whatever an interrupted save left there is deleted)."""
    folder = staging(out, name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def read_metrics(path: Path, up_to_step: int | None = None) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl (those with `step <= up_to_step` when given); a line cut by a kill, or
    any line that is not a JSON record with a step, is left out."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        step = record.get("step") if isinstance(record, dict) else None
        if isinstance(step, int) and (up_to_step is None or step <= up_to_step):
            records.append(record)
    return records


class RunState:
    """What a checkpoint must carry to resume exactly (position, best score, optimizer, scheduler, random state),
    saved into and restored from the run folder `config.out`."""

    def __init__(self, config: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any):
        self.config, self.model, self.optimizer, self.scheduler = config, model, optimizer, scheduler
        self.out = Path(config.out)
        self.epoch = 0  # current epoch
        self.batch = 0  # optimizer steps taken in the current epoch
        self.step = 0  # optimizer steps in total
        self.best = -math.inf  # best validation SI-SNRi (dB)
        self.saved_step: int | None = None

    def state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "batch": self.batch,
            "step": self.step,
            "best": self.best,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def save(self, name: str, extra: dict[str, Any] | None = None, with_state: bool = True) -> Path:
        """Write checkpoint `name` (with the training state unless `with_state` is False) by a recoverable swap
        (see the module docstring); a full disk or another write error is an OSError, the previous one stays."""
        with as_os_error():
            staging = prepare_staging(self.out, name)
            training = {"step": self.step, "epoch": self.epoch, **(extra or {})}
            write_checkpoint(self.model, staging, extra={"training": training})
            crash_point(f"{name}:staging")
            if with_state:
                save_state(self.state(), staging)
        crash_point(f"{name}:staged")
        replace_dir(staging, self.out / name)
        if with_state:
            self.saved_step = self.step
        return self.out / name

    def restore(self, directory: Path) -> None:
        """Continue from the checkpoint in `directory` (weights, optimizer, scheduler, random state, position);
        a damaged or mismatching one is a one-line `RunFolderError` naming it."""
        from safetensors import SafetensorError

        try:
            state = load_state(directory)
            load_weights(self.model, directory / "model.safetensors")
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None and state["scheduler"] is not None:
                self.scheduler.load_state_dict(state["scheduler"])
        except (CheckpointError, SafetensorError, OSError, ValueError, KeyError, TypeError) as err:
            detail = " ".join(str(err).split())
            raise RunFolderError(f"{directory}: cannot resume from this checkpoint ({detail})") from None
        torch.set_rng_state(state["rng_cpu"])
        if state["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        self.epoch, self.batch, self.step, self.best = state["epoch"], state["batch"], state["step"], state["best"]
        self.saved_step = self.step


class MetricsLog:
    """metrics.jsonl (and TensorBoard when installed) on rank 0; nothing on the other ranks."""

    def __init__(self, out: Path, active: bool, resume_step: int | None) -> None:
        """`resume_step`: keep what the interrupted run logged up to that step (its checkpoint) and drop the rest;
        None starts an empty log."""
        self.path = out / METRICS_FILE
        self.active = active
        self.writer = None
        if not active:
            return
        kept = read_metrics(self.path, resume_step) if resume_step is not None else []
        write_bytes(self.path, "".join(json.dumps(record) + "\n" for record in kept).encode())
        with contextlib.suppress(ImportError):
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        if not self.active:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, int | float) and key not in ("step", "epoch"):
                    self.writer.add_scalar(f"{record['event']}/{key}", value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def resume_point(run: RunState, reset_lr: bool) -> bool:
    """Restore `run` from the newest complete checkpoint of its folder (read only); False when the run never
    saved one (it then starts at step 0). Raises `RunFolderError` when it cannot be resumed."""
    if not (run.out / CONFIG_FILE).is_file():
        raise RunFolderError(f"{run.out / CONFIG_FILE}: not found, nothing to resume (run without --resume first)")
    directory = checkpoint_to_resume(run.out)
    if directory is None:
        return False
    run.restore(directory)
    if reset_lr:
        for group in run.optimizer.param_groups:
            group["lr"] = run.config.lr
    return True


def open_folder(out: Path, config: TrainConfig, resume: bool, overwrite: bool) -> None:
    """Make the run folder ready to write: finish interrupted swaps (resume) or set an old run aside
    (overwrite), then save the settings."""
    if resume:
        recover(out)
    elif overwrite:
        archive(out)
    out.mkdir(parents=True, exist_ok=True)
    write_bytes(out / CONFIG_FILE, (json.dumps(config.to_dict(), indent=2) + "\n").encode())
    crash_point("run:config")
