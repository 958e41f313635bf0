"""The install: requirements.lock agrees with pyproject.toml, the torch pair is the tested one, a broken pair is
one line, and `tse --version` names the versions."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tse_cli import versions

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def _lock() -> dict[str, list[tuple[str, str | None]]]:
    """Package name -> [(version, marker)] as pinned in requirements.lock (a package may have one pin per marker)."""
    pins: dict[str, list[tuple[str, str | None]]] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if match := PIN.match(line):
            name, version, marker = match.groups()
            pins.setdefault(canonicalize_name(name), []).append((version, marker))
    return pins


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [r for group in ("test", "onnx") for r in project["optional-dependencies"][group]]
    return [Requirement(r) for r in [*project["dependencies"], *extras]]


def test_lock_pins_every_declared_requirement_inside_its_range() -> None:
    pins = _lock()
    assert len(pins) > 30, "requirements.lock looks empty or unparsed"
    for requirement in _declared():
        locked = pins.get(canonicalize_name(requirement.name))
        assert locked, f"{requirement.name} is declared in pyproject.toml but not pinned in requirements.lock"
        for version, marker in locked:
            assert requirement.specifier.contains(version, prereleases=True), (
                f"requirements.lock pins {requirement.name}=={version} ({marker or 'all platforms'}), "
                f"outside pyproject.toml's {requirement}: run `make lock`"
            )


def test_every_lock_pin_is_exact_and_hashed() -> None:
    text = (ROOT / "requirements.lock").read_text()
    entries = [line for line in text.splitlines() if line and not line[0].isspace() and not line.startswith("#")]
    assert entries and all(PIN.match(line) for line in entries), [e for e in entries if not PIN.match(e)][:3]
    assert text.count("--hash=sha256:") >= len(entries)


def test_torch_pair_is_pinned_exactly_and_matches_the_tested_pair() -> None:
    declared = {canonicalize_name(r.name): r for r in _declared()}
    pins = _lock()
    for package, version in versions.TESTED.items():
        assert str(declared[package].specifier) == f"=={version}", f"pyproject.toml must pin {package}=={version}"
        assert [v for v, _ in pins[package]] == [version]
        assert versions.installed(package).split("+")[0] == version, f"this venv has another {package}"


@pytest.mark.parametrize(
    ("torch", "torchaudio", "broken"),
    [
        ("2.11.0+cu130", "2.11.0", False),
        ("2.14.1", "2.11.1", False),
        ("2.11.0", "2.11.1", True),
        ("2.11.0", "2.12.0rc1", True),
        (None, "2.11.0", True),
    ],
)
def test_pair_problem(torch: str | None, torchaudio: str | None, broken: bool) -> None:
    problem = versions.pair_problem(torch, torchaudio)
    assert (problem is not None) == broken
    if problem:
        assert "\n" not in problem and "pip install 'torch==2.11.0' 'torchaudio==2.11.0'" in problem


def _run(args: list[str], extra_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=120)


def test_a_torchaudio_newer_than_torch_is_one_line(tmp_path: Path) -> None:
    # A newer torchaudio's metadata ahead of the real one on sys.path, as pip leaves it after a bad resolution.
    info = tmp_path / "torchaudio-2.99.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: torchaudio\nVersion: 2.99.0\n")
    for args in (["-c", "import tse_cli"], ["-m", "tse_cli", "--version"]):
        done = _run(args, tmp_path)
        assert done.returncode == 1, done
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert "torchaudio 2.99.0" in lines[0] and "torch 2.11.0" in lines[0] and "pip install" in lines[0]


def test_version_names_torch_cuda_and_torchaudio() -> None:
    done = _run(["-m", "tse_cli", "--version"])
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert re.search(r"^tse \S+ \(torch 2\.11\.0\S*, (CPU build|CUDA [\d.]+.*); torchaudio 2\.11\.0\S*; Python 3", line)
