"""tse's CPU kernels are optional: turned off, without a compiler, with a failing build, an unwritable or an
unsafe cache, `tse_cli.models.kernels.library()` is None and every model gives the same output through its PyTorch
operations; the build lands once, atomically, in the user's cache, also when processes build it together. These
tests run (and pass) on a machine without a compiler."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tse_cli.models import create, kernels
from tse_cli.models.ssm import dispatch, resolve_backend
from tse_cli.versions import describe


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """Kernels loaded anew under the test's environment (an empty cache in tmp_path/cache), and again after it."""
    monkeypatch.setenv(kernels.CACHE_VAR, str(tmp_path / "cache"))
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    kernels.library.cache_clear()
    yield tmp_path
    monkeypatch.undo()
    kernels.library.cache_clear()


def _outputs(seed: int = 0) -> list[torch.Tensor]:
    """A tiny WaveMamba's offline forward and its stream in 100-sample chunks (inference mode)."""
    torch.manual_seed(seed)
    model = create("wavemamba-small", enc_dim=64, dec_dim=32, num_enc_layers=2).eval()
    x, query = torch.randn(1, 1, 1500) * 0.3, torch.eye(41)[:1]
    with torch.inference_mode():
        s = model.streamer(query)
        return [model(x, query), torch.cat([*(s.feed(p) for p in x.split(100, -1)), s.flush()], -1)]


def _failing_compiler(folder: Path) -> str:
    script = folder / "broken-cc"
    script.write_text('#!/bin/sh\n[ "$1" = --version ] && { echo broken-cc 1.0; exit 0; }\necho nope >&2\nexit 1\n')
    script.chmod(0o755)
    return str(script)


@pytest.mark.parametrize("case", ["turned off", "no compiler", "failing build", "unwritable cache", "unsafe cache"])
def test_every_failure_falls_back_to_pytorch_with_the_same_output(case, fresh, monkeypatch):
    expected = _outputs()  # with the kernels where they build here (this machine's default)
    reason = {
        "turned off": "TSE_CPU_KERNELS=off",
        "no compiler": "no-such-compiler",
        "failing build": "failed: nope",
        "unwritable cache": "Error",
        "unsafe cache": "writable by other users",
    }[case]
    if case == "turned off":
        monkeypatch.setenv(kernels.ENV_VAR, "off")
    elif case == "no compiler":
        monkeypatch.setenv("CC", str(fresh / "no-such-compiler"))
    elif case == "failing build":
        monkeypatch.setenv("CC", _failing_compiler(fresh))
    elif case == "unwritable cache":  # (a file where a folder must be: unwritable also for root)
        (fresh / "file").write_text("")
        monkeypatch.setenv(kernels.CACHE_VAR, str(fresh / "file" / "kernels"))
    else:
        (fresh / "shared").mkdir()
        (fresh / "shared").chmod(0o777)
        monkeypatch.setenv(kernels.CACHE_VAR, str(fresh / "shared"))
    kernels.library.cache_clear()
    assert kernels.library() is None and reason in kernels.build_error()
    assert not list(fresh.glob("**/.*.part"))  # no temporary left behind
    with torch.no_grad():
        assert not kernels.usable(torch.zeros(1))
        assert resolve_backend("auto", torch.zeros(1)) == "reference"
    assert "CPU kernels off" in describe()
    for got, want in zip(_outputs(), expected, strict=True):
        assert (got - want).abs().max() <= 1e-5


def test_explicit_cpu_scan_says_why_it_cannot_run(fresh, monkeypatch):
    monkeypatch.setenv("CC", str(fresh / "no-such-compiler"))
    with pytest.raises(RuntimeError, match="could not be built: .*no-such-compiler"):
        resolve_backend("cpu", torch.zeros(1))


def _can_build() -> bool:
    kernels.library.cache_clear()
    try:
        return kernels.available()
    finally:
        kernels.library.cache_clear()


def test_build_lands_once_in_the_cache(fresh):
    if not _can_build():
        pytest.skip(f"tse's CPU kernels do not build here: {kernels.build_error()}")
    (built,) = (fresh / "cache").iterdir()  # _can_build built it into the fixture's cache
    assert built.name.startswith("tse-kernels-") and built.suffix == ".so"
    assert not built.stat().st_mode & 0o022 and not (fresh / "cache").stat().st_mode & 0o077
    before = built.stat().st_mtime_ns
    assert kernels.available() and built.stat().st_mtime_ns == before  # loaded, not rebuilt
    assert "CPU kernels on" in describe()


def test_concurrent_processes_build_and_load_one_complete_library(fresh):
    """Four processes building into one empty cache at once: each loads a complete library, no temporary stays."""
    if not _can_build():
        pytest.skip(f"tse's CPU kernels do not build here: {kernels.build_error()}")
    for built in (fresh / "cache").iterdir():
        built.unlink()
    code = "from tse_cli.models import kernels; assert kernels.available(), kernels.build_error()"
    env = {**os.environ, kernels.CACHE_VAR: str(fresh / "cache")}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE) for _ in range(4)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read().decode()
    assert [p.name for p in (fresh / "cache").iterdir()] == [next((fresh / "cache").glob("*.so")).name]


def test_the_default_cache_is_the_users(monkeypatch, tmp_path):
    monkeypatch.delenv(kernels.CACHE_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert kernels.cache_dir() == tmp_path / "tse" / "kernels"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert kernels.cache_dir() == Path.home() / ".cache" / "tse" / "kernels"


def test_training_never_goes_through_the_kernels(monkeypatch):
    """Under autograd the gradients are bit for bit those of the PyTorch operations (the kernels have no backward)."""

    def gradients() -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = create("wavemamba-small", enc_dim=64, dec_dim=32, num_enc_layers=2).train()
        x, query = torch.randn(1, 1, 800) * 0.3, torch.eye(41)[:1]
        model(x, query).square().mean().backward()
        return [p.grad for p in model.parameters() if p.grad is not None]

    with_kernels = gradients()
    monkeypatch.setattr(kernels, "available", lambda: False)
    for got, expected in zip(with_kernels, gradients(), strict=True):
        assert torch.equal(got, expected)


FORK_SCRIPT = """
import os, signal, torch
from tse_cli.models import kernels
torch.set_num_threads(2)
y, norm = torch.randn(512, 512), torch.nn.LayerNorm(512)
with torch.no_grad():
    expected = kernels.norm(y, norm)  # a parallel call: OpenMP's team of two threads has worked
pid = os.fork()
if pid == 0:
    signal.alarm(30)  # a child waiting on the parent's (gone) threads dies of SIGALRM
    torch.set_num_threads(1)  # what DataLoader workers do (torch's own operations hang in the child otherwise)
    with torch.no_grad():
        os._exit(0 if torch.equal(kernels.norm(y, norm), expected) else 3)
_, status = os.waitpid(pid, 0)
raise SystemExit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_runs_the_kernels_after_its_parent_did():
    """A DataLoader worker forks after the parent's kernels ran on two OpenMP threads, and runs them on one."""
    assert kernels.threads(kernels.PARALLEL_ELEMENTS) == torch.get_num_threads()
    assert kernels.threads(kernels.PARALLEL_ELEMENTS - 1) == 1
    done = subprocess.run([sys.executable, "-c", FORK_SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"child exit {done.returncode}: {done.stderr[-500:]}"


def test_a_compiler_without_openmp_builds_kernels_that_run_in_the_calling_thread(fresh, monkeypatch):
    """Where -fopenmp fails (Apple's clang), the kernels are built without it: one thread, the same outputs."""
    compiler = kernels._compiler()
    if compiler is None or not _can_build():
        pytest.skip(f"tse's CPU kernels do not build here: {kernels.build_error()}")
    script = fresh / "cc-without-openmp"
    script.write_text(
        f'#!/bin/sh\nfor a in "$@"; do [ "$a" = -fopenmp ] && {{ echo "no OpenMP" >&2; exit 1; }}; done\n'
        f'exec {shutil.which(compiler)} "$@"\n'
    )
    script.chmod(0o755)
    monkeypatch.setenv("CC", str(script))
    kernels.library.cache_clear()
    assert kernels.available() and kernels.library().tse_openmp() == 0
    monkeypatch.setattr(kernels, "PARALLEL_ELEMENTS", 1)  # every call asks for torch's threads
    fast = _outputs()
    monkeypatch.setattr(kernels, "available", lambda: False)
    for got, expected in zip(fast, _outputs(), strict=True):
        assert (got - expected).abs().max() <= 1e-5
