"""`tse extract` never calls a wrong output done: absurd, non-finite and truncated inputs, a diverging model, paths
the OS can produce that are not audio files, outputs that cannot be written, and signals (real subprocesses)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn
from typer.testing import CliRunner

from tse_cli.cli import app

ROOT = Path(__file__).resolve().parents[1]
TSE = [sys.executable, "-m", "tse_cli"]


def run(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def noise(path: Path, frames: int = 4410, rate: int = 44100, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = (np.random.default_rng(0).standard_normal((frames, 1)) * 0.1).astype(np.float32)
    sf.write(str(path), x, rate, **kwargs)
    return path


def tree(folder: Path) -> list[str]:
    """Every entry under `folder` (hidden temporaries included), relative, sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Waveformer checkpoint directory (random weights)."""
    from tse_cli.checkpoint import save_checkpoint
    from tse_cli.models import create

    torch.manual_seed(0)
    model = create("waveformer-large", enc_dim=32, dec_dim=16, num_enc_layers=2)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny")


# wrong output called done -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("subtype", [None, "PCM_16"])
def test_absurd_and_non_finite_samples_are_refused(tmp_path: Path, tiny: Path, subtype: str | None) -> None:
    src = tmp_path / "in"
    noise(src / "good.wav", subtype="FLOAT")
    for name, value in (("huge.wav", 1e30), ("big.wav", 40000.0), ("inf.wav", np.inf)):
        x = np.zeros((4410, 1), np.float32)
        x[1234] = value
        sf.write(str(src / name), x, 44100, subtype="FLOAT")
    x = np.full((4410, 1), 30000.0, np.float32)  # integer-scaled floats (as some tools write them): accepted
    sf.write(str(src / "scaled.wav"), x, 44100, subtype="FLOAT")
    extra = ["--subtype", subtype] if subtype else []
    result = run("extract", src, "-c", "Cough", "--checkpoint", tiny, "-O", tmp_path / "out", *extra)
    assert result.exit_code == 1
    assert sorted(errors(result.stderr)) == [
        f"error: {src / 'big.wav'}: sample of magnitude 4e+04 at frame 1234 (beyond +-32768; audio is within +-1)",
        f"error: {src / 'huge.wav'}: sample of magnitude 1e+30 at frame 1234 (beyond +-32768; audio is within +-1)",
        f"error: {src / 'inf.wav'}: non-finite sample (NaN or inf) at frame 1234",
    ]
    assert tree(tmp_path / "out") == ["good_Cough.wav", "scaled_Cough.wav"]
    for name in tree(tmp_path / "out"):
        assert np.isfinite(sf.read(str(tmp_path / "out" / name))[0]).all()


class Diverging(nn.Module):
    """A causal stand-in model whose output turns NaN (or huge) after `after` samples."""

    sample_rate = 16000
    clue_kind = "class"
    clue_rate = None
    max_classes = None
    inference_options = ()
    takes_progress = False
    latency_samples = 0

    def __init__(self, value: float, after: int) -> None:
        super().__init__()
        self.value, self.after = value, after

    def forward(self, mixture: torch.Tensor, clue: torch.Tensor) -> torch.Tensor:
        return self.streamer(clue).feed(mixture)

    def streamer(self, clue: torch.Tensor):
        model, seen = self, [0]

        class Streamer:
            def feed(self, x: torch.Tensor) -> torch.Tensor:
                y = x.clone()
                start = max(model.after - seen[0], 0)
                y[..., start:] = model.value
                seen[0] += x.shape[-1]
                return y

            def flush(self) -> torch.Tensor:
                return torch.zeros(1, 1, 0)

        return Streamer()


@pytest.mark.parametrize("value", [float("nan"), 1e6])
def test_a_diverging_model_fails_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: float) -> None:
    monkeypatch.setattr("tse_cli.weights.load_model", lambda spec, device="cpu", registry=None: Diverging(value, 5000))
    mix = noise(tmp_path / "mix.wav", frames=16000, rate=16000)
    short = noise(tmp_path / "short.wav", frames=4000, rate=16000)  # ends before the model diverges
    out = tmp_path / "out"
    result = run("extract", mix, short, "-c", "Cough", "-O", out, "--block-size", "1000", "--residual")
    assert result.exit_code == 1
    problem = (
        "non-finite sample (NaN or inf) at frame 5000" if np.isnan(value) else "sample of magnitude 1e+06 at frame 5000"
    )
    (line,) = errors(result.stderr)
    assert line.startswith(f"error: {mix}: the model's output is unusable: {problem}")
    assert tree(out) == ["short_Cough.wav", "short_Cough_residual.wav"]


def cut(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("a.wav", {"subtype": "PCM_16"}),
        ("b.wav", {"subtype": "FLOAT"}),
        ("c.aiff", {"format": "AIFF", "subtype": "PCM_24"}),
        ("d.au", {"format": "AU", "subtype": "PCM_16"}),
        ("e.w64", {"format": "W64", "subtype": "PCM_16"}),
        ("f.rf64", {"format": "RF64", "subtype": "PCM_16"}),
        ("g.ogg", {"format": "OGG", "subtype": "VORBIS"}),
        ("h.flac", {"format": "FLAC", "subtype": "PCM_16"}),
    ],
)
def test_truncated_inputs_fail(tmp_path: Path, tiny: Path, name: str, options: dict) -> None:
    whole = noise(tmp_path / "whole" / name, frames=44100, **options)
    broken = noise(tmp_path / "cut" / name, frames=44100, **options)
    cut(broken, 0.6)
    ok = run("extract", whole, "-c", "Cough", "--checkpoint", tiny, "-o", tmp_path / "ok.wav")
    assert ok.exit_code == 0, ok.stderr
    result = run("extract", broken, "-c", "Cough", "--checkpoint", tiny, "-o", tmp_path / "out.wav")
    assert result.exit_code == 1
    (line,) = errors(result.stderr)
    assert line.startswith(f"error: {broken}: ") and ("truncated" in line or "decode" in line or "readable" in line)
    assert not (tmp_path / "out.wav").exists()


def test_a_streamed_wav_without_a_length_is_not_called_truncated(tmp_path: Path, tiny: Path) -> None:
    """Writers that cannot seek back (ffmpeg into a pipe) leave 0xFFFFFFFF as the RIFF and data sizes."""
    data = bytearray(noise(tmp_path / "mix.wav", frames=4410).read_bytes())
    data[4:8] = data[40:44] = b"\xff\xff\xff\xff"
    (tmp_path / "mix.wav").write_bytes(bytes(data))
    result = run("extract", tmp_path / "mix.wav", "-c", "Cough", "--checkpoint", tiny, "-o", tmp_path / "out.wav")
    assert result.exit_code == 0, result.stderr
    assert sf.info(str(tmp_path / "out.wav")).frames == 4410


# paths that are not audio files, outputs that cannot be written ---------------------------------------------------


def test_paths_that_are_not_audio_files_fail_alone(tmp_path: Path, tiny: Path) -> None:
    src = tmp_path / "in"
    noise(src / "good.wav")
    (src / "folder.wav").mkdir()
    os.mkfifo(src / "pipe.wav")
    (src / "link.wav").symlink_to(src / "gone.wav")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "sock.wav"))
    try:
        result = run("extract", src, "-c", "Cough", "--checkpoint", tiny, "-O", tmp_path / "out")
    finally:
        sock.close()
    assert result.exit_code == 1
    assert sorted(errors(result.stderr)) == [
        f"error: {src / 'folder.wav'}: is a folder, not an audio file",
        f"error: {src / 'link.wav'}: broken symbolic link (to {src / 'gone.wav'})",
        f"error: {src / 'pipe.wav'}: is a named pipe (FIFO), not an audio file",
        f"error: {src / 'sock.wav'}: is a socket, not an audio file",
    ]
    assert tree(tmp_path / "out") == ["good_Cough.wav"]


def test_a_folder_input_is_named(tmp_path: Path, tiny: Path) -> None:
    folder = tmp_path / "x.wav"
    (folder / "deeper").mkdir(parents=True)
    for out in (["-o", tmp_path / "out.wav"], ["-O", tmp_path / "out"]):
        result = run("extract", folder, "-c", "Cough", "--checkpoint", tiny, *out)
        assert result.exit_code == 1
        assert errors(result.stderr) == [
            f"error: {folder}: a folder with no audio files (-r/--recursive descends into subfolders)"
        ]
    noise(folder / "deeper" / "a.wav")
    result = run("extract", folder, "-r", "-c", "Cough", "--checkpoint", tiny, "-O", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert tree(tmp_path / "out") == ["deeper", "deeper/a_Cough.wav"]


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_an_output_path_that_is_a_folder_fails_alone(tmp_path: Path, tiny: Path, overwrite: list[str]) -> None:
    a, b = noise(tmp_path / "in" / "a.wav"), noise(tmp_path / "in" / "b.wav")
    out = tmp_path / "out"
    (out / "a_Cough.wav").mkdir(parents=True)
    result = run("extract", a, b, "-c", "Cough", "--checkpoint", tiny, "-O", out, *overwrite)
    assert result.exit_code == 1
    assert errors(result.stderr) == [f"error: {out / 'a_Cough.wav'}: cannot write the output there: it is a folder"]
    assert sf.info(str(out / "b_Cough.wav")).frames == 4410
    single = run("extract", a, "-c", "Cough", "--checkpoint", tiny, "-o", out / "a_Cough.wav", *overwrite)
    assert single.exit_code == 1 and "it is a folder" in single.stderr
    assert (out / "a_Cough.wav").is_dir()


def test_an_output_name_taken_by_a_folder_mid_run_fails_alone(
    tmp_path: Path, tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planning found nothing there; the folder appears before the rename (another program)."""
    from tse_cli.audio import AtomicWriter

    enter = AtomicWriter.__enter__

    def entered(self):
        writer = enter(self)
        if self.path.name.startswith("a"):
            self.path.mkdir()
        return writer

    monkeypatch.setattr(AtomicWriter, "__enter__", entered)
    a, b = noise(tmp_path / "in" / "a.wav"), noise(tmp_path / "in" / "b.wav")
    out = tmp_path / "out"
    result = run("extract", a, b, "-c", "Cough", "--checkpoint", tiny, "-O", out)
    assert result.exit_code == 1
    (line,) = errors(result.stderr)
    assert line.startswith(f"error: {out / 'a_Cough.wav'}: cannot write (") and "directory" in line
    assert tree(out) == ["a_Cough.wav", "b_Cough.wav"] and (out / "a_Cough.wav").is_dir()


def test_a_full_disk_says_so(tmp_path: Path, tiny: Path, full_disk: Path) -> None:
    big, small = noise(tmp_path / "big.wav", frames=44100), noise(tmp_path / "small.wav", frames=2000)
    result = run("extract", big, small, "-c", "Cough", "--checkpoint", tiny, "-O", full_disk)
    assert result.exit_code == 1
    assert errors(result.stderr) == [f"error: {full_disk / 'big_Cough.wav'}: cannot write (No space left on device)"]
    assert tree(full_disk) == ["small_Cough.wav"]
    fill(full_disk)
    again = run("extract", big, "-c", "Cough", "--checkpoint", tiny, "-o", full_disk / "x.wav")
    assert again.exit_code == 1
    (line,) = errors(again.stderr)
    assert line.startswith(f"error: {full_disk / 'x.wav'}: cannot ") and line.endswith("(No space left on device)")
    assert "x.wav" not in " ".join(tree(full_disk))


def fill(folder: Path) -> None:
    """Fill the file system of `folder` to its last block."""
    with contextlib.suppress(OSError), open(folder / "fill", "wb", buffering=0) as f:
        while True:
            f.write(b"\0" * 512)


# signals (real processes) -----------------------------------------------------------------------------------------


def start(tmp_path: Path, tiny: Path, *inputs: Path) -> subprocess.Popen:
    args = ["extract", *map(str, inputs), "-c", "Cough", "--checkpoint", str(tiny), "-O", str(tmp_path / "out")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [*TSE, *args, "--block-size", "256", "--jobs", "1"], stderr=subprocess.PIPE, text=True, env=env
    )


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"tse ended early: {proc.communicate()[1]}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def mid_batch(tmp_path: Path, tiny: Path) -> subprocess.Popen:
    """A run of two inputs stopped at nothing yet: the first output is in place, the second's `.part` exists."""
    first = noise(tmp_path / "in" / "a.wav", frames=2000)
    second = noise(tmp_path / "in" / "b.wav", frames=44100 * 20)
    proc = start(tmp_path, tiny, first, second)
    out = tmp_path / "out"
    wait_for(lambda: (out / "a_Cough.wav").exists() and any(p.endswith(".part") for p in tree(out)), proc)
    return proc


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_signals_mid_batch_leave_no_partial_file(tmp_path: Path, tiny: Path, signum: int, code: int) -> None:
    proc = mid_batch(tmp_path, tiny)
    proc.send_signal(signum)
    stderr = proc.communicate(timeout=120)[1]
    assert proc.returncode == code, stderr
    assert f"interrupted ({signal.Signals(signum).name}): no partial outputs were left" in stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
    assert tree(tmp_path / "out") == ["a_Cough.wav"]
    assert sf.info(str(tmp_path / "out" / "a_Cough.wav")).frames == 2000


def test_a_second_ctrl_c_exits_at_once_and_the_next_run_cleans_up(tmp_path: Path, tiny: Path) -> None:
    proc = mid_batch(tmp_path, tiny)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    stderr = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
    out = tmp_path / "out"
    noise(tmp_path / "in" / "b.wav", frames=2000)
    again = run("extract", tmp_path / "in", "-c", "Cough", "--checkpoint", tiny, "-O", out)
    assert again.exit_code == 0, again.stderr
    assert tree(out) == ["a_Cough.wav", "b_Cough.wav"]  # whatever the second Ctrl-C cut short is gone


def test_a_killed_run_s_temporary_files_are_removed_by_the_next(tmp_path: Path, tiny: Path) -> None:
    proc = mid_batch(tmp_path, tiny)
    proc.kill()
    proc.communicate(timeout=120)
    out = tmp_path / "out"
    (left,) = [p for p in tree(out) if p.endswith(".part")]
    foreign = out / ".b_Cough.wav.mine.part"  # not tse's naming: kept
    foreign.write_bytes(b"")
    noise(tmp_path / "in" / "b.wav", frames=2000)
    again = run("extract", tmp_path / "in", "-c", "Cough", "--checkpoint", tiny, "-O", out)
    assert again.exit_code == 0, again.stderr
    assert tree(out) == [".b_Cough.wav.mine.part", "a_Cough.wav", "b_Cough.wav"]
    assert left not in tree(out)


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc to see torch loading")
def test_ctrl_c_during_start_up_is_never_swallowed(tmp_path: Path, tiny: Path) -> None:
    proc = start(tmp_path, tiny, noise(tmp_path / "in" / "a.wav"))

    def torch_loading() -> bool:
        return "libtorch" in Path(f"/proc/{proc.pid}/maps").read_text()

    wait_for(torch_loading, proc)
    proc.send_signal(signal.SIGINT)
    stderr = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
    assert tree(tmp_path / "out") == []
