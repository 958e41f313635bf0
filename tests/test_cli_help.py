"""Discoverability through the real CLI: readable help and man pages, shell completion, -v/--verbose, one meaning
per short flag, `tse models list` (licence, --architectures) and `tse man`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tse_cli import manpages
from tse_cli.cli import app
from tse_cli.models import ARCHITECTURES

ROOT = Path(__file__).resolve().parents[1]
TYPE_NAMES = re.compile(r"<(bool|str|int|float|path|list\[[^>]*\])[^>]*>|\{[A-Za-z_.]+\}")
runner = CliRunner()


def commands(command=None, path=("tse",)):
    """(path, click command) for tse and every subcommand."""
    command = command or typer.main.get_command(app)
    yield path, command
    for name, child in getattr(command, "commands", {}).items():
        yield from commands(child, (*path, name))


def test_help_shows_placeholders_not_python_types():
    for path, _ in commands():
        result = runner.invoke(app, [*path[1:], "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        usage = next(line for line in result.output.splitlines() if "Usage:" in line)
        assert not TYPE_NAMES.search(result.output.replace("{stem}", "").replace("{target}", "").replace(
            "{model}", "").replace("{ext}", "")), (path, result.output)  # fmt: skip
        assert "{" not in usage, usage
    extract = runner.invoke(app, ["extract", "--help"], env={"COLUMNS": "200"}).output
    assert "Usage: tse extract [OPTIONS] INPUT..." in extract and "--class        -c      CLASS" in extract
    assert "Usage: tse train [OPTIONS] ARCH" in runner.invoke(app, ["train", "--help"]).output


def test_man_pages_use_the_same_placeholders():
    page = manpages.generate()["tse-extract.1"]
    assert "INPUT\\fR..." in page and "INPUT\\fR...." not in page and "......" not in page
    assert "\\fB\\-c\\fR, \\fB\\-\\-class\\fR \\fICLASS\\fR" in page
    train = manpages.generate()["tse-train.1"]
    assert "\\fB\\-a\\fR, \\fB\\-\\-model\\-arg\\fR \\fINAME=VALUE\\fR" in train and "\\fB\\-m\\fR" not in train


def test_each_short_flag_has_one_meaning():
    meanings: dict[str, set[str]] = {}
    for _, command in commands():
        for param in command.params:
            if param.param_type_name != "option" or param.hidden:
                continue
            long_name = next((o for o in param.opts if o.startswith("--")), None)
            long_name = {"--out": "--output"}.get(long_name, long_name)  # one meaning, two spellings
            for short in (o for o in param.opts if not o.startswith("--")):
                meanings.setdefault(short, set()).add(long_name)
    clashes = {short: names for short, names in meanings.items() if len(names) > 1}
    assert not clashes, clashes
    assert meanings["-m"] == {"--model"} and meanings["-a"] == {"--model-arg"} and meanings["-v"] == {"--verbose"}


def tse_script() -> str:
    """The installed `tse` console script (the installed completion scripts call it by that name)."""
    script = Path(sys.executable).with_name("tse")
    if not script.is_file():
        pytest.skip(f"no tse script beside {sys.executable} (install the package: make .venv/.installed)")
    return str(script)


def complete(env: dict[str, str]) -> str:
    """What the completion protocol the shell scripts speak answers (in-process, as the script `tse`)."""
    done = runner.invoke(app, [], env=env, prog_name="tse")
    assert done.exit_code == 0, done.output
    return done.stdout


def test_shell_completion_of_classes_models_and_architectures():
    bash = {"_TSE_COMPLETE": "complete_bash", "COMP_WORDS": "tse extract a.wav -c co", "COMP_CWORD": "4"}
    assert complete(bash).split() == ["Computer_keyboard", "Cough", "Cowbell"]
    models = complete({**bash, "COMP_WORDS": "tse extract a.wav --model ", "COMP_CWORD": "4"}).split()
    assert {"waveformer", "dpm-tse", "demo"} <= set(models)
    archs = complete({**bash, "COMP_WORDS": "tse train wavem", "COMP_CWORD": "2"}).split()
    assert archs == ["wavemamba-large", "wavemamba-small"]
    zsh = complete({"_TSE_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "tse demo -c gon"})
    assert '"Gong"' in zsh
    fish = complete(
        {"_TSE_COMPLETE": "complete_fish", "_TYPER_COMPLETE_ARGS": "tse eval --model dem",
         "_TYPER_COMPLETE_FISH_ACTION": "get-args"}
    )  # fmt: skip
    assert fish.split() == ["demo"]


def test_completion_scripts_install_for_bash_zsh_and_fish(tmp_path: Path):
    from typer.completion import get_completion_script

    for shell in ("bash", "zsh", "fish"):
        script = get_completion_script(prog_name="tse", complete_var="_TSE_COMPLETE", shell=shell)
        assert "_TSE_COMPLETE" in script and f"complete_{shell}" in script
    env = {**os.environ, "HOME": str(tmp_path), "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    done = subprocess.run([tse_script(), "--install-completion", "bash"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "_TSE_COMPLETE" in (tmp_path / ".bash_completions" / "tse.sh").read_text()
    assert "tse.sh" in (tmp_path / ".bashrc").read_text()
    shown = subprocess.run([tse_script(), "--show-completion", "fish"], env=env, capture_output=True, text=True)
    assert shown.returncode == 0 and "complete --command tse" in shown.stdout


@pytest.mark.parametrize("where", ["global", "command"])
def test_verbose_reports_what_the_run_uses_on_stderr(tmp_path: Path, where: str):
    train = ["train", "wavemamba-small", "--data", str(tmp_path / "none"), "-o", str(tmp_path / "run")]
    result = runner.invoke(app, ["-v", *train] if where == "global" else [*train, "-v"])
    assert result.exit_code == 2 and "data folder not found" in result.output  # reported before the data check
    err = result.stderr.splitlines()
    assert "model: wavemamba-small (3,236,608 parameters, 44100 Hz)" in err, err
    assert "weights: none (new model)" in err and "device: cpu" in err and "scan backend: reference (auto)" in err
    assert any(re.fullmatch(r"threads: \d+ intra-op, \d+ inter-op", line) for line in err)
    assert not result.stdout
    quiet = runner.invoke(app, train)
    assert "device:" not in quiet.output, "no details without -v (a previous -v does not stick)"


def test_verbose_names_the_weights_file_of_a_loaded_model():
    from tse_cli.runinfo import run_details
    from tse_cli.weights import load_model

    details = dict(run_details(load_model("demo"), "cpu", spec="demo"))
    assert details["model"] == "demo (wavemamba-small, 303,104 parameters, 44100 Hz)"
    assert details["weights"] == str(ROOT / "tse_cli" / "assets" / "demo" / "model.safetensors")


def test_report_lists_the_block_size():
    import torch

    from tse_cli.models import create
    from tse_cli.runinfo import run_details

    net = create("waveformer-small", enc_dim=16, dec_dim=8, num_enc_layers=1)
    details = dict(run_details(net, torch.device("cpu"), spec="mine", block_size=4410))
    assert (
        details["model"]
        == f"mine (waveformer-small, {sum(p.numel() for p in net.parameters()):,} parameters, 44100 Hz)"
    )
    assert details["weights"] == "none (new model)" and details["scan backend"] == "none (no Mamba layers)"
    assert details["block size"] == "4410 samples (100 ms)"


def test_models_list_shows_the_license_and_the_architectures():
    table = runner.invoke(app, ["models", "list"], env={"COLUMNS": "200"})
    assert table.exit_code == 0
    header = next(line for line in table.output.splitlines() if "architecture" in line)
    assert "license" in header
    assert re.search(r"dpm-tse .* unspecified", table.output) and re.search(r"demo .* MIT", table.output)
    listed = json.loads(runner.invoke(app, ["models", "list", "--architectures", "--json"]).output)
    assert [row["architecture"] for row in listed] == sorted(ARCHITECTURES)
    trainable = {row["architecture"]: row["trainable"] for row in listed}
    assert trainable["wavemamba-small"] and trainable["dpm-tse"] and not trainable["waveformer"]
    shown = runner.invoke(app, ["models", "list", "--architectures"], env={"COLUMNS": "200"}).output
    assert "av-sepmamba-small" in shown and "enc_dim=512, dec_dim=128" in shown


def test_tse_man_shows_prints_and_writes_the_pages(tmp_path: Path):
    roff = runner.invoke(app, ["man", "extract", "--roff"])
    assert roff.exit_code == 0 and roff.stdout == (ROOT / "man" / "tse-extract.1").read_text()
    assert runner.invoke(app, ["man", "models", "list", "--roff"]).stdout.startswith('.TH "TSE\\-MODELS\\-LIST"')
    missing = runner.invoke(app, ["man", "nothing"])
    assert missing.exit_code == 2 and "no manual page for 'tse nothing'" in missing.output
    written = runner.invoke(app, ["man", "--write", str(tmp_path / "man1")])
    assert written.exit_code == 0 and sorted(p.name for p in (tmp_path / "man1").iterdir()) == sorted(
        p.name for p in (ROOT / "man").glob("*.1")
    )
    env = {**os.environ, "MANPAGER": "cat", "PAGER": "cat", "MANWIDTH": "100"}
    if shutil.which("man"):
        shown = subprocess.run(
            [sys.executable, "-m", "tse_cli", "man", "extract"], env=env, capture_output=True, text=True
        )
        assert shown.returncode == 0 and "tse extract [OPTIONS] INPUT..." in shown.stdout, shown.stderr
    no_man = {**env, "PATH": str(Path(sys.executable).parent)}  # python, and no `man`: the help text instead
    fallback = subprocess.run(
        [sys.executable, "-m", "tse_cli", "man", "train"], env=no_man, capture_output=True, text=True
    )
    assert fallback.returncode == 0 and "tse train [OPTIONS] ARCH" in fallback.stdout, fallback.stderr


@pytest.mark.slow
def test_a_wheel_installs_the_man_pages_under_share_man(tmp_path: Path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("man", "tse_cli"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)]
    done = subprocess.run([*build, str(source)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    wheel = next(tmp_path.glob("tse_cli-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    pages = {Path(n).name for n in names if "/data/share/man/man1/" in n}
    assert pages == {p.name for p in (ROOT / "man").glob("*.1")}
