"""`tse train` never loses or mixes trained weights: kills at every checkpointing step, signals, old runs, bad settings.

The kills are real SIGKILLs (`TSE_TEST_CRASH_AT`, `tse_cli.crashpoints`) of `tse train` processes forked from one
forkserver that imported tse once, so each run costs its training only; `--resume` must then replay exactly the
losses and weights of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train import MODEL_ARGS as TINY_ARGS
from test_train import train_losses, write_scene_set

from tse_cli.crashpoints import VARIABLE

FORKS = multiprocessing.get_context("forkserver")
# what a `tse train` run imports, once for all the runs (nothing here starts a thread, so forking stays safe)
FORKS.set_forkserver_preload(
    ["tse_cli.cli", "tse_cli.train.loop", "tse_cli.train.task_wave", "torch._dynamo", "torchaudio", "typer._adapters"]
    + ["rich.progress"]
)
MODEL_ARGS = [arg for name, value in TINY_ARGS.items() for arg in ("-a", f"{name}={value}")]
SETTINGS = ["--batch-size", "2", "--num-workers", "0", "--lr", "3e-3", "--save-every", "3", "--epochs", "100"]
SETTINGS += ["--set", "fixed_epochs=1", "--set", "log_every=1", "-q"]


def _tse(args: list[str], env: dict[str, str], stderr: str | None) -> None:
    """A forked child: `tse ARGS` in its own session, with `env` added and stderr into the file `stderr`."""
    os.setsid()
    os.environ.update(env)
    if stderr is not None:
        os.dup2(os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
    from tse_cli.cli import app

    app(args, prog_name="tse")


def start(args: list[object], crash_at: str | None = None, stderr: Path | None = None) -> multiprocessing.Process:
    """`tse ARGS` in a process forked from the preloaded server (its pid is its process group)."""
    env = {VARIABLE: crash_at} if crash_at else {}
    child = FORKS.Process(target=_tse, args=([str(a) for a in args], env, str(stderr) if stderr else None))
    child.start()
    return child


def finish(child: multiprocessing.Process) -> int:
    child.join(300)
    assert child.exitcode is not None, "tse did not finish"
    return child.exitcode


def tse_train(data: Path | None, run: Path, *extra: str, crash_at: str | None = None) -> int:
    """Run `tse train waveformer-small -o RUN` in a forked process; its exit code (-9: killed)."""
    args = ["train", "waveformer-small", "-o", run, *(["--data", data] if data else []), *extra]
    return finish(start(args, crash_at))


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "last" / "model.safetensors"))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_scene_set(tmp_path_factory.mktemp("faults") / "set", {"train": 8, "val": 2})


@pytest.fixture(scope="module")
def whole(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run: 2 epochs of 4 steps; `last` saved at steps 0, 3, 4, 6, 8 and `best` at 4 and 8."""
    run = tmp_path_factory.mktemp("whole") / "run"
    assert tse_train(data, run, *MODEL_ARGS, *SETTINGS, "--max-steps", "8") == 0
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = [line["si_snri"] for line in lines if line["event"] == "val"]
    assert len(val) == 2 and val[1] > val[0], "the second validation must improve, so that best/ is replaced once"
    return run


# (crash point, its occurrence): every step of every kind of save, first saves and replacements, mid-epoch,
# at an epoch end (best then last) and the final save
POINTS = [
    ("run:config", 1),  # train.json written, no checkpoint yet
    ("last:staging", 1),  # the step-0 checkpoint half written
    ("last:staging", 2),  # step 3: model files staged, training state not yet
    ("last:staged", 2),
    ("last:old-moved", 1),  # step 3, between the two renames: .last.old and a complete .last.staging, no last/
    ("last:swapped", 1),
    ("best:staging", 1),  # step 4, the first best
    ("best:staged", 1),
    ("last:old-moved", 2),  # step 4, the epoch end's last right after its best
    ("best:old-moved", 1),  # step 8, best replaced
    ("best:swapped", 1),
    ("last:old-moved", 4),  # the final save
    ("last:swapped", 4),
]


@pytest.mark.parametrize(("point", "nth"), POINTS, ids=[f"{p}@{n}" for p, n in POINTS])
def test_a_kill_at_any_checkpoint_step_resumes_exactly(
    data: Path, whole: Path, tmp_path: Path, point: str, nth: int
) -> None:
    run = tmp_path / "run"
    code = tse_train(data, run, *MODEL_ARGS, *SETTINGS, "--max-steps", "8", crash_at=f"{point}@{nth}")
    assert code == -signal.SIGKILL, f"the run was not killed at {point}@{nth} (exit {code})"
    if (point, nth) == ("last:old-moved", 1):  # the state the issue reported as "no checkpoint to resume from"
        assert not (run / "last").exists() and (run / ".last.old").is_dir() and (run / ".last.staging").is_dir()
    if (run / "metrics.jsonl").exists():
        with (run / "metrics.jsonl").open("a") as f:
            f.write('{"event": "train", "st')  # a line cut by the kill
    assert tse_train(None, run, "--resume", "-q") == 0
    assert train_losses(run) == train_losses(whole)
    expected, got = weights(whole), weights(run)
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    best = load_file(str(run / "best" / "model.safetensors"))
    assert all(torch.equal(best[k], load_file(str(whole / "best" / "model.safetensors"))[k]) for k in best)
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in whole.iterdir()), "no leftovers"


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under `folder` with its mtime and bytes."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file()
    }


def test_an_old_run_is_refused_kept_by_overwrite_and_never_mixed(data: Path, whole: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(whole, run)
    shutil.rmtree(run / "last")  # best/ without last/: the run the issue saw replaced
    before = snapshot(run)
    assert tse_train(data, run, *MODEL_ARGS, *SETTINGS, "--max-steps", "2") == 2
    assert tse_train(None, run, "--resume", "--max-steps", "2", "-q") == 2, "a restart would replace best/"
    assert snapshot(run) == before, "refusing changed the folder"
    assert tse_train(data, run, *MODEL_ARGS, *SETTINGS, "--max-steps", "2", "--overwrite") == 0
    archived = list((run / "previous").iterdir())
    assert len(archived) == 1
    assert snapshot(archived[0]) == before, "the old run is kept whole"
    assert len(train_losses(run)) == 2, "the new run's metrics are its own"


BAD = [
    (["--batch-size", "0"], "batch_size: must be at least 1, got 0"),
    (["-a", "bogus=1"], "unknown argument(s) bogus"),
    (["-a", "enc_dim=4000000"], "check its sizes"),
    (["--set", "log_every=0"], "log_every: must be at least 1"),
    (["--lr", "nan"], "lr: must be a finite number"),
]


@pytest.mark.parametrize(("extra", "message"), BAD, ids=[" ".join(e) for e, _ in BAD])
def test_a_failing_check_is_one_line_and_changes_nothing(
    data: Path, whole: Path, tmp_path: Path, extra: list[str], message: str
) -> None:
    run, err = tmp_path / "run", tmp_path / "stderr"
    shutil.copytree(whole, run)
    before = snapshot(run)
    assert finish(start(["train", "waveformer-small", "-o", run, "--resume", *extra], stderr=err)) == 2
    stderr = err.read_text()
    assert message in stderr and len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr, stderr
    assert snapshot(run) == before, "train.json or a checkpoint was rewritten"
    fresh = ["train", "waveformer-small", "--data", data, "-o", tmp_path / "new", *MODEL_ARGS, *extra]
    assert finish(start(fresh, stderr=err)) == 2 and message in err.read_text()
    assert not (tmp_path / "new").exists()


def _start_long(data: Path, run: Path, stderr: Path) -> multiprocessing.Process:
    """A long `tse train` in its own process group, returned once it has logged 3 steps."""
    args = ["train", "waveformer-small", "--data", data, "-o", run, *MODEL_ARGS, *SETTINGS, "--max-steps", "100000"]
    child = start(args, stderr=stderr)
    deadline = time.monotonic() + 240
    while len(train_losses(run) if (run / "metrics.jsonl").exists() else []) < 3:
        assert child.is_alive(), stderr.read_text()
        assert time.monotonic() < deadline, "tse train did not start"
        time.sleep(0.02)
    return child


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_saves_the_current_step_and_exits_128_plus_n(data: Path, tmp_path: Path, sig) -> None:
    run, err = tmp_path / "run", tmp_path / "stderr"
    child = _start_long(data, run, err)
    os.killpg(child.pid, sig)  # the whole group, as a terminal or a job scheduler does
    assert finish(child) == 128 + sig, err.read_text()
    stderr = err.read_text()
    assert "Traceback" not in stderr and f"interrupted by {sig.name}" in stderr, stderr
    steps = len(train_losses(run))
    assert json.loads((run / "last" / "config.json").read_text())["training"]["step"] == steps, "not saved"
    assert tse_train(None, run, "--resume", "--max-steps", str(steps + 2), "-q") == 0
    reference = tmp_path / "reference"
    assert tse_train(data, reference, *MODEL_ARGS, *SETTINGS, "--max-steps", str(steps + 2)) == 0
    assert train_losses(run) == train_losses(reference)


def test_a_double_ctrl_c_exits_130_without_a_traceback(data: Path, tmp_path: Path) -> None:
    """Whether the second Ctrl-C comes during the stop (exit at once) or after it: 130 and no traceback."""
    run, err = tmp_path / "run", tmp_path / "stderr"
    child = _start_long(data, run, err)
    os.killpg(child.pid, signal.SIGINT)
    time.sleep(0.01)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGINT)
    assert finish(child) == 130
    stderr = err.read_text()
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert tse_train(None, run, "--resume", "--max-steps", "3", "-q") == 0, "the run folder is still resumable"


@pytest.mark.parametrize("damaged", ["training_state.safetensors", "training_state.json", "model.safetensors"])
def test_a_damaged_checkpoint_is_one_line_and_changes_nothing(whole: Path, tmp_path: Path, damaged: str) -> None:
    run, err = tmp_path / "run", tmp_path / "stderr"
    shutil.copytree(whole, run)
    path = run / "last" / damaged
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    before = snapshot(run)
    assert finish(start(["train", "waveformer-small", "-o", run, "--resume", "--max-steps", "9"], stderr=err)) == 2
    (line,) = err.read_text().strip().splitlines()
    assert f"{run / 'last'}" in line and "cannot resume from this checkpoint" in line, line
    assert snapshot(run) == before
