"""The training loop shared by every architecture family, single process or under `torchrun`.

Run folder layout (`config.out`):

- `train.json`: the resolved `TrainConfig` (accepted by `--config`);
- `metrics.jsonl`: one JSON object per line, `{"event": "train", "step", "epoch", "loss", "lr", "grad_norm",
  "steps_per_s", "processes"}` every `log_every` steps and `{"event": "val", "step", "epoch", "si_snri", "snri", ...}`
  after each validation;
- `last/`: the newest checkpoint directory (`config.json`, `model.safetensors`) plus its training state
  (`tse_cli.train.state`), written every `save_every` steps and at each epoch end; `--resume` continues it;
- `best/`: the checkpoint with the best validation SI-SNRi so far;
- `tensorboard/`: scalars, when the `tensorboard` package is installed.

Every directory is assembled beside its destination and renamed into place. Reproducibility: one seed makes
the model initialisation, the per-epoch shuffling (`DistributedSampler`), the data loaders' worker seeds and each
example's randomness (`tasks.example_rng`); the torch RNG state (dropout) is saved with each checkpoint and a
resumed run skips the batches the interrupted epoch had already used, so it replays the same losses.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from tse_cli.atomic import replace_dir, write_bytes
from tse_cli.checkpoint import write_checkpoint
from tse_cli.models import create
from tse_cli.train.config import TrainConfig
from tse_cli.train.evaluation import evaluate, first, to_device
from tse_cli.train.metrics import METRICS
from tse_cli.train.state import load_state, save_state
from tse_cli.train.tasks import Task, get_task

LAST, BEST, CONFIG_FILE, METRICS_FILE = "last", "best", "train.json", "metrics.jsonl"


class TrainingError(RuntimeError):
    """Training stopped: a non-finite loss or gradient, or a run folder that cannot be resumed."""


# ---- processes and devices ----


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank), initialising the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, 0
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0"))


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """The device `name` checked as `tse extract` checks it (`tse_cli.devices.resolve_device`: a one-line
    ValueError for a bad or absent one); `auto` and `cuda` mean the local rank's GPU when CUDA is available."""
    from tse_cli.devices import resolve_device

    device = resolve_device(name)
    return torch.device("cuda", local_rank) if device.type == "cuda" and device.index is None else device


# ---- data ----


class _Skip(Sampler[int]):
    """The indices of a `DistributedSampler` for one epoch, minus the first `skip` (already trained on)."""

    def __init__(self, sampler: DistributedSampler, skip: int) -> None:
        self.sampler, self.skip = sampler, skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.sampler)[self.skip :])

    def __len__(self) -> int:
        return max(len(self.sampler) - self.skip, 0)


def _loader(
    task: Task, dataset: Dataset, config: TrainConfig, sampler: Sampler[int], seed: int, train: bool
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        collate_fn=task.collate,
        num_workers=config.num_workers,
        drop_last=train,
        generator=torch.Generator().manual_seed(seed),  # worker seeds never draw from the global RNG
        persistent_workers=False,
    )


# ---- run folder ----


class _Run:
    """The state that a checkpoint must carry to resume exactly, and the files of the run folder."""

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
        staging = self.out / f".{name}.staging"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        training = {"step": self.step, "epoch": self.epoch, **(extra or {})}
        write_checkpoint(self.model, staging, extra={"training": training})
        if with_state:
            save_state(self.state(), staging)
        replace_dir(staging, self.out / name)
        if with_state:
            self.saved_step = self.step
        return self.out / name

    def restore(self) -> None:
        directory = self.out / LAST
        if not (directory / "model.safetensors").is_file():
            raise TrainingError(f"{directory}: no checkpoint to resume from")
        from safetensors.torch import load_model

        try:
            state = load_state(directory)
        except FileNotFoundError as err:
            raise TrainingError(str(err)) from None
        load_model(self.model, str(directory / "model.safetensors"), strict=True, device=str(_device_of(self.model)))
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng_cpu"])
        if state["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        self.epoch, self.batch, self.step, self.best = state["epoch"], state["batch"], state["step"], state["best"]
        self.saved_step = self.step


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class _Log:
    """metrics.jsonl (and TensorBoard when installed) on rank 0; nothing on the other ranks."""

    def __init__(self, out: Path, active: bool, resume_step: int | None) -> None:
        self.path = out / METRICS_FILE
        self.active = active
        self.writer = None
        if not active:
            return
        if resume_step is not None and self.path.exists():  # drop what the interrupted run logged after its save
            kept = [line for line in self.path.read_text().splitlines() if json.loads(line)["step"] <= resume_step]
            write_bytes(self.path, "".join(line + "\n" for line in kept).encode())
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


# ---- the loop ----


def _optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    kinds = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    if config.optimizer not in kinds:
        raise TrainingError(f"unknown optimizer {config.optimizer!r}; known: {', '.join(kinds)}")
    return kinds[config.optimizer](model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def _scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer) -> Any:
    if config.scheduler == "none":
        return None
    if config.scheduler != "plateau":
        raise TrainingError(f"unknown scheduler {config.scheduler!r}; known: plateau, none")
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode="max",
        factor=config.plateau_factor,
        patience=config.plateau_patience,
        threshold=config.plateau_threshold,
        threshold_mode="abs",
        min_lr=config.min_lr,
    )


def _all_mean(value: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        dist.all_reduce(value)
        value = value / world
    return value


class NonFinite(ArithmeticError):
    """A non-finite loss or gradient norm: the step was not applied."""


def train_step(
    net: nn.Module,
    task: Task,
    batch: dict[str, Any],
    options: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    grad_clip: float,
    autocast: Any,
    world: int = 1,
) -> tuple[float, float]:
    """One optimizer step; returns (loss averaged over processes, gradient norm before clipping).

    Raises `NonFinite` (without touching the weights) when the loss or the gradient norm is NaN or infinite;
    under DDP every process sees the same values, so all of them stop together.
    """
    with autocast:
        loss = task.loss(net, batch, options)
    mean_loss = _all_mean(loss.detach().float().clone(), world).item()
    if not math.isfinite(mean_loss):
        raise NonFinite(f"loss is {mean_loss}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    norm = nn.utils.clip_grad_norm_(params, grad_clip or math.inf).item()
    if not math.isfinite(norm):
        raise NonFinite(f"gradient norm is {norm}")
    optimizer.step()
    return mean_loss, norm


def task_options(task: Task, overrides: dict[str, Any]) -> dict[str, Any]:
    """The task's option defaults updated by `overrides`; unknown names are an error."""
    unknown = sorted(set(overrides) - set(task.options))
    if unknown:
        known = ", ".join(task.options) or "none"
        raise TrainingError(f"unknown option(s) {', '.join(unknown)} for {task.family}; known: {known}")
    return {**task.options, **overrides}


def train(config: TrainConfig, resume: bool = False, progress: Any = None, reset_lr: bool = False) -> dict[str, Any]:
    """Train `config.arch` on `config.data` into `config.out`; returns {"step", "epoch", "best_si_snri", ...}.

    A resumed run continues the optimizer and scheduler exactly; `reset_lr` then sets the learning rate to
    `config.lr` from there on (a fine-tuning phase).

    `progress`, when given, is called as `progress(event, **values)` on rank 0 with events "epoch"
    (epoch, batches), "step" (loss, lr), "val" (metrics) for a user interface. Raises `TrainingError` (the
    last good checkpoint stays in `out/last`), `tasks.DataError` or `config.ConfigError`.
    """
    rank, world, local_rank = _distributed()
    device = pick_device(config.device, local_rank)
    task = get_task(config.arch)
    options = task_options(task, config.task)
    root = Path(config.data)
    task.validate(root, (config.train_split, config.val_split))

    out = Path(config.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_bytes(out / CONFIG_FILE, (json.dumps(config.to_dict(), indent=2) + "\n").encode())

    torch.manual_seed(config.seed)
    model = create(config.arch, **config.model_args).to(device)
    optimizer = _optimizer(config, model)
    scheduler = _scheduler(config, optimizer)
    run = _Run(config, model, optimizer, scheduler)
    if resume:
        run.restore()
        if reset_lr:
            for group in optimizer.param_groups:
                group["lr"] = config.lr
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    train_set = task.dataset(root, config.train_split, options, train=True, seed=config.seed)
    val_set = first(task.dataset(root, config.val_split, options, train=False, seed=config.seed), config.val_limit)
    sampler = DistributedSampler(
        train_set, num_replicas=world, rank=rank, shuffle=True, seed=config.seed, drop_last=True
    )
    val_sampler = DistributedSampler(val_set, num_replicas=world, rank=rank, shuffle=False)
    batches = len(sampler) // config.batch_size
    if batches == 0:
        raise TrainingError(
            f"{root}: {len(train_set)} training examples give no full batch of {config.batch_size} per process"
        )

    log = _Log(out, rank == 0, run.step if resume else None)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and config.amp)
    notify = progress if (progress is not None and rank == 0) else (lambda *a, **k: None)
    tick, ticked = time.perf_counter(), run.step
    window: list[float] = []

    def validate() -> dict[str, float]:
        loader = _loader(task, val_set, config, val_sampler, config.seed, train=False)
        records = evaluate(model, task, loader, options, device)
        records = [r for r in records if all(math.isfinite(r[k]) for k in METRICS)]  # silent targets give inf
        sums = torch.tensor(
            [len(records)] + [sum(r[k] for r in records) for k in METRICS],
            dtype=torch.float64,
            device=device,
        )
        if world > 1:
            dist.all_reduce(sums)
        count = max(sums[0].item(), 1.0)
        result = {k: sums[i + 1].item() / count for i, k in enumerate(METRICS)}
        model.train()
        return result

    stop = False
    try:
        while run.epoch < config.epochs and not stop:
            sampler.set_epoch(run.epoch)
            if hasattr(train_set, "set_epoch"):
                train_set.set_epoch(run.epoch)
            loader = _loader(
                task, train_set, config, _Skip(sampler, run.batch * config.batch_size), config.seed + run.epoch, True
            )
            notify("epoch", epoch=run.epoch, batches=batches, done=run.batch)
            net.train()
            for batch in loader:
                try:
                    mean_loss, norm = train_step(
                        net, task, to_device(batch, device), options, optimizer, config.grad_clip, autocast, world
                    )
                except NonFinite as err:
                    raise TrainingError(_stopped(run, str(err))) from None
                run.step += 1
                run.batch += 1
                window.append(mean_loss)
                lr = optimizer.param_groups[0]["lr"]
                notify("step", loss=mean_loss, lr=lr)
                if run.step % config.log_every == 0:
                    now = time.perf_counter()
                    log.write(
                        {
                            "event": "train",
                            "step": run.step,
                            "epoch": run.epoch,
                            "loss": sum(window) / len(window),
                            "lr": lr,
                            "grad_norm": norm,
                            "steps_per_s": (run.step - ticked) / (now - tick),
                            "processes": world,
                        }
                    )
                    tick, ticked, window = now, run.step, []
                if config.max_steps and run.step >= config.max_steps:
                    stop = True
                    break
                if config.save_every and run.step % config.save_every == 0 and run.batch < batches:
                    _save(run, rank, world, LAST)
            if not stop:
                run.epoch, run.batch = run.epoch + 1, 0
            metrics = validate()
            log.write({"event": "val", "step": run.step, "epoch": run.epoch, **metrics})
            notify("val", **metrics)
            if scheduler is not None and run.epoch >= config.fixed_epochs and not stop:
                scheduler.step(metrics["si_snri"])
            if metrics["si_snri"] > run.best:
                run.best = metrics["si_snri"]
                _save(run, rank, world, BEST, extra={"val": metrics}, with_state=False)
            _save(run, rank, world, LAST)
    finally:
        log.close()
        if world > 1:
            dist.destroy_process_group()
    return {"step": run.step, "epoch": run.epoch, "best_si_snri": run.best, "out": str(out)}


def _save(run: _Run, rank: int, world: int, name: str, **kwargs: Any) -> None:
    if rank == 0:
        run.save(name, **kwargs)
    else:
        run.saved_step = run.step if kwargs.get("with_state", True) else run.saved_step
    if world > 1:
        dist.barrier()


def _stopped(run: _Run, why: str) -> str:
    kept = (
        f"the last good checkpoint (step {run.saved_step}) is in {run.out / LAST}"
        if run.saved_step
        else "no checkpoint was saved yet"
    )
    return f"step {run.step + 1} (epoch {run.epoch}): {why}; training stopped, {kept}"
