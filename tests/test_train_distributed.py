"""`torchrun` with two CPU processes on gloo: DistributedDataParallel trains and checkpoints (resume: test_train)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_train import MODEL_ARGS, write_scene_set

from tse_cli.checkpoint import load_checkpoint
from tse_cli.train.state import load_state


def torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    return subprocess.run([*command, "-m", "tse_cli", *args], capture_output=True, text=True, env=env, timeout=300)


def test_two_gloo_processes_train_and_checkpoint(tmp_path: Path) -> None:
    data = write_scene_set(tmp_path / "set", {"train": 8, "val": 2})
    run = tmp_path / "run"
    model_args = [arg for k, v in MODEL_ARGS.items() for arg in ("-a", f"{k}={v}")]
    args = ["train", "waveformer-small", "--data", str(data), "-o", str(run), "--batch-size", "2", "-q"]
    args += ["--num-workers", "0", "--save-every", "3", "--set", "log_every=1", "--max-steps", "5", *model_args]
    result = torchrun(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [line for line in lines if line["event"] == "train"]
    assert [line["step"] for line in train] == [1, 2, 3, 4, 5]  # 8 examples / (2 processes x 2) = 2 steps/epoch
    assert all(line["processes"] == 2 for line in train)
    assert [line["epoch"] for line in train] == [0, 0, 1, 1, 2]
    assert [line["epoch"] for line in lines if line["event"] == "val"] == [1, 2, 2]
    assert load_checkpoint(run / "best").config["enc_dim"] == MODEL_ARGS["enc_dim"]
    state = load_state(run / "last")
    assert (state["step"], state["epoch"], state["batch"]) == (5, 2, 1)
