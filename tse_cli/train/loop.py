"""The training loop shared by every architecture family, single process or under `torchrun`.

Run folder layout (`config.out`; how runs are kept apart and checkpoints survive a kill: `run_folder`):

- `train.json`: the resolved `TrainConfig` (accepted by `--config`);
- `metrics.jsonl`: one JSON object per line, `{"event": "train", "step", "epoch", "loss", "lr", "grad_norm",
  "steps_per_s", "processes"}` every `log_every` steps and `{"event": "val", "step", "epoch", "si_snri", "snri", ...}`
  after each validation;
- `last/`: the newest checkpoint directory (`config.json`, `model.safetensors`) plus its training state
  (`tse_cli.train.state`), written at step 0, every `save_every` steps, at each epoch end and when a signal
  stops the run (`tse_cli.signals`); `--resume` continues it;
- `best/`: the checkpoint with the best validation SI-SNRi so far;
- `tensorboard/`: scalars, when the `tensorboard` package is installed.

Nothing is written in the run folder before every check has passed (settings, data, model size, the checkpoint
to resume). Every directory is assembled beside its destination and renamed into place. Reproducibility: one seed makes
the model initialisation, the per-epoch shuffling (`DistributedSampler`), the data loaders' worker seeds and each
example's randomness (`tasks.example_rng`); the torch RNG state (dropout) is saved with each checkpoint and a
resumed run skips the batches the interrupted epoch had already used, so it replays the same losses.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from tse_cli import signals
from tse_cli.models import create
from tse_cli.models.budget import TRAINING_COPIES, check_fits
from tse_cli.train import run_folder
from tse_cli.train.config import ConfigError, TrainConfig
from tse_cli.train.evaluation import evaluate, first, to_device
from tse_cli.train.metrics import METRICS
from tse_cli.train.run_folder import BEST, LAST, MetricsLog, RunState
from tse_cli.train.tasks import Task, check_rate, get_task


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


# ---- the loop ----


def _optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    kinds = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    if config.optimizer not in kinds:
        raise ConfigError(f"optimizer: unknown {config.optimizer!r}; known: {', '.join(kinds)}")
    return kinds[config.optimizer](model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def _scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer) -> Any:
    if config.scheduler == "none":
        return None
    if config.scheduler != "plateau":
        raise ConfigError(f"scheduler: unknown {config.scheduler!r}; known: plateau, none")
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
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for {task.family}; known: {known}")
    return {**task.options, **overrides}


def train(
    config: TrainConfig,
    resume: bool = False,
    progress: Any = None,
    reset_lr: bool = False,
    overwrite: bool = False,
    stop_on_signal: bool = False,
) -> dict[str, Any]:
    """Train `config.arch` on `config.data` into `config.out`; returns {"step", "epoch", "best_si_snri", ...}.

    A folder that holds an earlier run is refused unless `resume` (continue it from its newest complete
    checkpoint, finishing a checkpoint swap that a kill interrupted) or `overwrite` (move it to
    `out/previous/STAMP/` first). A resumed run continues the optimizer and scheduler exactly; `reset_lr` then
    sets the learning rate to `config.lr` from there on (a fine-tuning phase).

    `progress`, when given, is called as `progress(event, **values)` on rank 0 with events "epoch"
    (epoch, batches, done), "step" (loss, lr), "validating" (examples: this process's count), "validated"
    (examples: how many more were evaluated), "val" (metrics) and "signal" (signum) for a user interface. With
    `stop_on_signal`, SIGINT, SIGTERM or SIGHUP stop training after the current step or epoch end
    (`signals.stop_when_asked`; a second one exits at once): `last/` is saved, then `signals.Interrupted` is
    raised. Raises `TrainingError` (the last good checkpoint stays in `out/last`), `run_folder.RunFolderError`,
    `tasks.DataError` (a data set at another sample rate than the model's included), `config.ConfigError` or a
    ValueError (model arguments or size); none of them changes the run folder.
    """
    out = Path(config.out)
    if not resume and not overwrite:
        run_folder.refuse_previous(out)
    rank, world, local_rank = _distributed()
    device = pick_device(config.device, local_rank)
    task = get_task(config.arch)
    options = task_options(task, config.task)
    root = Path(config.data)
    task.validate(root, (config.train_split, config.val_split))
    check_rate(task, root, config.arch)
    check_fits(config.arch, config.model_args, device, copies=TRAINING_COPIES, origin="model_args")

    torch.manual_seed(config.seed)
    model = create(config.arch, **config.model_args).to(device)
    optimizer = _optimizer(config, model)
    scheduler = _scheduler(config, optimizer)
    run = RunState(config, model, optimizer, scheduler)
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
    restored = run_folder.resume_point(run, reset_lr) if resume else False
    net: nn.Module = model
    if world > 1:
        dist.barrier()  # every rank has read the checkpoint before rank 0 touches the folder
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    # every check passed: from here on the run folder changes
    if rank == 0:
        run_folder.open_folder(out, config, resume, overwrite)
    log = MetricsLog(out, rank == 0, run.step if restored else None)
    if not restored:
        _save(run, rank, world, LAST)  # step 0: from now on there is always a checkpoint to resume
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and config.amp)
    notify = progress if (progress is not None and rank == 0) else (lambda *a, **k: None)
    tick, ticked = time.perf_counter(), run.step
    window: list[float] = []

    def validate() -> dict[str, float]:
        loader = _loader(task, val_set, config, val_sampler, config.seed, train=False)
        notify("validating", examples=len(val_sampler))
        records = evaluate(model, task, loader, options, device, lambda n: notify("validated", examples=n))
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

    def stop_if_signalled() -> None:
        signum = _agreed_signal(world, device) if stop_on_signal else 0
        if signum:
            if run.saved_step != run.step:
                _save(run, rank, world, LAST)
            raise signals.Interrupted(signum)

    stop = bool(config.max_steps and run.step >= config.max_steps)  # a finished run resumed: nothing to do
    try:
        asked = signals.stop_when_asked(lambda signum: notify("signal", signum=signum))
        with asked if stop_on_signal else contextlib.nullcontext():
            while run.epoch < config.epochs and not stop:
                sampler.set_epoch(run.epoch)
                if hasattr(train_set, "set_epoch"):
                    train_set.set_epoch(run.epoch)
                skip = _Skip(sampler, run.batch * config.batch_size)
                loader = _loader(task, train_set, config, skip, config.seed + run.epoch, True)
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
                    stop_if_signalled()
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
                if not stop:
                    stop_if_signalled()
    finally:
        log.close()
        if world > 1:
            dist.destroy_process_group()
    return {"step": run.step, "epoch": run.epoch, "best_si_snri": run.best, "out": str(out)}


def _agreed_signal(world: int, device: torch.device) -> int:
    """The signal that stops the run (0: none); under DDP every process learns it, so all stop at one step."""
    signum = signals.requested() or 0
    if world > 1:
        flag = torch.tensor([signum], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        signum = int(flag.item())
    return signum


def _save(run: RunState, rank: int, world: int, name: str, **kwargs: Any) -> None:
    if rank == 0:
        run.save(name, **kwargs)
    else:
        run.saved_step = run.step if kwargs.get("with_state", True) else run.saved_step
    if world > 1:
        dist.barrier()


def _stopped(run: RunState, why: str) -> str:
    kept = (
        f"the last good checkpoint (step {run.saved_step}) is in {run.out / LAST}"
        if run.saved_step is not None
        else "no checkpoint was saved yet"
    )
    return f"step {run.step + 1} (epoch {run.epoch}): {why}; training stopped, {kept}"
