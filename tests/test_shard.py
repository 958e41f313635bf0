"""Sharded extraction: `--shard K/N` job arrays and torchrun ranks split the inputs and together equal one run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from tse_cli.cli import app
from tse_cli.sharding import Shard, assign, parse


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint) -> Path:
    """A tiny random Waveformer checkpoint directory."""
    return tiny_checkpoint("waveformer-small")


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """Seven files of different lengths in a two-level tree, and one that is not audio."""
    rng = np.random.default_rng(3)
    folder = tmp_path / "in"
    for i, frames in enumerate([900, 4000, 2500, 300, 3100, 1200, 2000]):
        path = folder / ("sub" if i % 2 else "") / f"f{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, rng.uniform(-0.5, 0.5, frames).astype(np.float32), 44100, subtype="PCM_16")
    return folder


def _extract(tiny: Path, inputs: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        app, ["extract", str(inputs), "-r", "-O", str(out), "--checkpoint", str(tiny), "-c", "Cough", *extra]
    )
    return result.exit_code, result.stdout, result.stderr


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_assign_balances_by_duration_and_is_deterministic() -> None:
    weights = [5.0, 1.0, 4.0, 2.0, 3.0, 3.0]
    owner = assign(weights, 2)
    assert owner == assign(list(weights), 2)
    loads = [sum(w for w, o in zip(weights, owner, strict=True) if o == s) for s in range(2)]
    assert sorted(loads) == [9.0, 9.0]
    assert assign(weights, 1) == [0] * 6 and sorted(set(assign(weights, 10))) == list(range(6))


def test_parse() -> None:
    assert parse("2/3") == Shard(1, 3) and str(parse("2/3")) == "2/3"
    for bad in ("0/2", "3/2", "1", "a/b", "1/0"):
        with pytest.raises(ValueError, match="--shard"):
            parse(bad)


def test_shards_together_equal_one_run(tmp_path: Path, tiny: Path, inputs: Path) -> None:
    code, _, _ = _extract(tiny, inputs, tmp_path / "one")
    assert code == 0
    parts = []
    for k in ("1/2", "2/2"):
        code, stdout, stderr = _extract(tiny, inputs, tmp_path / "sharded", "--shard", k, "--json")
        assert code == 0, stderr
        assert f"shard {k}: " in stderr
        parts.append({json.loads(line)["input"] for line in stdout.splitlines()})
    assert parts[0] and parts[1] and not parts[0] & parts[1] and len(parts[0] | parts[1]) == 7
    assert _tree(tmp_path / "sharded") == _tree(tmp_path / "one")
    # A rerun of a shard skips what it finished (an interrupted job array resumes).
    code, stdout, _ = _extract(tiny, inputs, tmp_path / "sharded", "--shard", "1/2", "--json")
    assert code == 0 and {json.loads(line)["status"] for line in stdout.splitlines()} == {"skipped"}


def test_shard_usage_errors(tmp_path: Path, tiny: Path, inputs: Path) -> None:
    assert _extract(tiny, inputs, tmp_path / "o", "--shard", "3/2")[0] == 2
    result = CliRunner().invoke(
        app,
        ["extract", str(inputs / "f0.wav"), "-o", str(tmp_path / "x.wav"), "--checkpoint", str(tiny)]
        + ["-c", "Cough", "--shard", "1/2"],
    )
    assert result.exit_code == 2 and "-O DIR" in result.stderr


def _torchrun(tiny: Path, inputs: Path, out: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += ["-m", "tse_cli", "extract", str(inputs), "-r", "-O", str(out), "--checkpoint", str(tiny)]
    command += ["-c", "Cough", "--device", "cpu", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_torchrun_ranks_equal_one_process_and_share_failures(tmp_path: Path, tiny: Path, inputs: Path) -> None:
    assert _extract(tiny, inputs, tmp_path / "one")[0] == 0
    done = _torchrun(tiny, inputs, tmp_path / "ranks")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert sorted(r["input"] for r in rows) == sorted(str(p) for p in inputs.rglob("*.wav"))  # rank 0 prints all
    assert "7 done, 0 skipped, 0 failed" in done.stderr
    assert _tree(tmp_path / "ranks") == _tree(tmp_path / "one")

    (inputs / "sub" / "broken.wav").write_bytes(b"RIFF....not audio")
    failed = _torchrun(tiny, inputs, tmp_path / "ranks")
    assert failed.returncode != 0
    assert "7 skipped, 1 failed" in failed.stderr and "broken.wav" in failed.stderr
