"""`tse mix` end to end: the synthetic corpus, both recipes, render, errors, and resume after a killed run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf
import typer
from test_data_common import built_set, copy_set, corpus, tree_bytes
from typer.testing import CliRunner

from tse_cli.commands import mix
from tse_cli.data.build import Options, build

# `tse mix` registered on its own app, so these tests do not depend on the other subcommands
_APP_CODE = (
    "import sys, typer; from tse_cli.commands import mix; app = typer.Typer(); "
    "app.callback()(lambda: None); mix.register(app); app()"
)


def _app() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)
    mix.register(app)
    return app


def _tse(*args: str):
    return CliRunner().invoke(_app(), ["mix", *map(str, args)])


def test_synthetic_corpus_then_dpm_set(tmp_path):
    res = _tse("--synthetic", "-o", tmp_path / "c", "--clips-per-class", 2, "--test-clips-per-class", 2,
               "--backgrounds", 2, "--eval-backgrounds", 1, "--background-seconds", 6.5)  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (tmp_path / "c/fsd/FSDKaggle2018.meta/train_post_competition.csv").is_file()
    assert len(list((tmp_path / "c/tau/TAU-urban-acoustic-scenes-2019-development/audio").glob("*.wav"))) == 2
    res = _tse("--fsd", tmp_path / "c/fsd", "--tau", tmp_path / "c/tau", "-o", tmp_path / "set",
               "--split", "val", "--count", 2, "--jobs", 1)  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "val" in res.output and "clipped mixtures" in res.output and "rendered now / already done" in res.output
    summary = json.loads((tmp_path / "set/summary.json").read_text())
    assert summary["mixtures"] == {"val": 2} and sum(summary["per_class"].values()) == 2
    assert (tmp_path / "set/meta.csv").read_text().count("\nval,val,val_") == 2
    res = _tse("--fsd", tmp_path / "c/fsd", "--tau", tmp_path / "c/tau", "-o", tmp_path / "set",
               "--split", "val", "--count", 2, "--jobs", 1)  # fmt: skip
    assert res.exit_code == 0 and json.loads((tmp_path / "set/summary.json").read_text())["already_done"] == 2


def test_waveformer_set_and_render_commands(tmp_path_factory, tmp_path):
    src = corpus(tmp_path_factory)
    out = tmp_path / "wf"
    res = _tse("--fsd", src / "fsd", "--tau", src / "tau", "-o", out, "--recipe", "waveformer", "--split", "test",
               "--count", 1, "--jobs", 1)  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (out / "test/00000/mixture.wav").is_file() and (out / "jams/test/00000/mixture.jams").is_file()
    before = tree_bytes(out / "test")
    (out / "test/00000/mixture.wav").unlink()
    res = _tse("render", out / "jams/test/00000/mixture.jams")
    assert res.exit_code == 0 and "rendered test/00000" in res.output, res.output
    assert tree_bytes(out / "test") == before
    res = _tse("render", "--jams", out / "jams", "--fsd", src / "fsd", "--tau", src / "tau", "-o", tmp_path / "re")
    assert res.exit_code == 0, res.output
    assert tree_bytes(tmp_path / "re" / "test") == before


def test_render_one_dpm_spec(tmp_path_factory, tmp_path):
    root = copy_set(built_set(tmp_path_factory, "dpm-tse", count=3, stems=True), tmp_path / "s")
    (root / "test/test_2.wav").unlink()
    res = _tse("render", root / "specs/test/test_2.json")
    assert res.exit_code == 0 and "rendered test/test_2" in res.output, res.output
    assert sf.info(str(root / "test/test_2.wav")).frames == 160000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--fsd", "{tmp}/nowhere", "--tau", "{tmp}", "-o", "{tmp}/o"],
            "nowhere: FSD Kaggle 2018 folder does not exist",
        ),
        (
            ["--fsd", "{src}/fsd", "--tau", "{tmp}", "-o", "{tmp}/o"],
            "no TAU-urban-acoustic-scenes-2019-development folder",
        ),
        (["--fsd", "{src}/fsd", "--tau", "{src}/tau"], "missing -o/--out"),
        (["--fsd", "{src}/fsd", "-o", "{tmp}/o"], "--fsd and --tau are required"),
        (["--fsd", "{src}/fsd", "--tau", "{src}/tau", "-o", "{tmp}/o", "--split", "dev"], "--split must be one of"),
        (["--fsd", "{src}/fsd", "--tau", "{src}/tau", "-o", "{tmp}/o", "--recipe", "x"], "unknown recipe 'x'"),
        (["--synthetic", "-o", "{tmp}/o", "--clips-per-class", "1"], "--clips-per-class must be at least 2"),
        (["render"], "give either one SPEC file or --jams DIR"),
        (["render", "{tmp}/none.json"], "none.json: no such specification file"),
        (["render", "--jams", "{tmp}"], "no .jams files found"),
        (["render", "{tmp}/bad.json"], "no train/val/test folder in its path"),
    ],
)
def test_errors_are_one_line_and_exit_2(tmp_path_factory, tmp_path, args, message):
    src = corpus(tmp_path_factory)
    (tmp_path / "bad.json").write_text("{}")
    res = _tse(*[a.format(tmp=tmp_path, src=src) for a in args])
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split()) and res.output.startswith("error:")
    assert not (tmp_path / "o").exists()


def test_failed_scenes_exit_1_with_their_names(tmp_path_factory, tmp_path):
    root = copy_set(built_set(tmp_path_factory, "waveformer", count=2), tmp_path / "s")
    spec = root / "jams/val/00000/mixture.jams"
    spec.write_text(spec.read_text().replace("FSDKaggle2018.audio_train", "moved_away"))
    for split in ("train", "val", "test"):
        for rec in (root / split).glob("*/render.json"):
            rec.unlink()
    res = _tse("render", "--jams", root / "jams", "-o", tmp_path / "out", "--jobs", 1)
    assert res.exit_code == 1
    assert "val/00000" in res.output and "moved_away" in res.output and "source file not found" in res.output
    assert json.loads((tmp_path / "out/summary.json").read_text())["mixtures"] == {"train": 2, "val": 1, "test": 2}


def start_mix(src: Path, cache: Path, out: Path, *options: str, **popen) -> subprocess.Popen:
    """`tse mix` of the train split into `out` in a subprocess, returned once 3 mixtures are done."""
    cmd = [sys.executable, "-c", _APP_CODE, "mix", "--fsd", str(src / "fsd"), "--tau", str(src / "tau"), "-o", str(out),
           "--split", "train", "--cache-dir", str(cache), *options]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, **popen)
    deadline = time.monotonic() + 240
    while len(list(out.glob("specs/train/*.done.json"))) < 3:
        assert proc.poll() is None, "the run ended before it could be stopped"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return proc


def test_resume_after_killed_run_is_byte_identical(tmp_path_factory, tmp_path):
    src = corpus(tmp_path_factory)
    cache = built_set(tmp_path_factory, "dpm-tse", count=3, stems=True) / ".cache"  # sources decoded already
    out = tmp_path / "killed"
    proc = start_mix(src, cache, out, "--count", "40", "--jobs", "1", "--stems", stderr=subprocess.DEVNULL)
    try:
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    done = sorted(out.glob("specs/train/*.done.json"))
    assert 3 <= len(done) < 40
    for path in out.rglob("*.wav"):  # nothing under a final name is partial
        assert sf.info(str(path)).frames == 160000, path
    summary = build(
        Options("dpm-tse", src / "fsd", src / "tau", out, ("train",), 40, jobs=1, stems=True, cache_dir=cache)
    )
    assert summary.resumed == len(done) and summary.rendered == 40 - len(done) and not summary.failed
    assert not list(out.rglob("*.tmp"))
    fresh = tmp_path / "fresh"
    build(Options("dpm-tse", src / "fsd", src / "tau", fresh, ("train",), 40, jobs=2, stems=True, cache_dir=cache))
    assert tree_bytes(out) == tree_bytes(fresh)
    assert (out / "meta.csv").read_bytes() == (fresh / "meta.csv").read_bytes()


@pytest.mark.parametrize(("sig", "group"), [(signal.SIGINT, True), (signal.SIGTERM, False)], ids=["ctrl-c", "kill"])
def test_an_interrupted_run_exits_128_plus_n_without_worker_tracebacks(tmp_path_factory, tmp_path, sig, group):
    """Ctrl-C reaches every process of the group (workers included); `kill PID` the parent only."""
    src = corpus(tmp_path_factory)
    cache = built_set(tmp_path_factory, "dpm-tse", count=3, stems=True) / ".cache"
    out = tmp_path / "out"
    proc = start_mix(src, cache, out, "--count", "400", "--jobs", "2", stderr=subprocess.PIPE, text=True,
                     start_new_session=True)  # fmt: skip
    try:
        os.killpg(proc.pid, sig) if group else os.kill(proc.pid, sig)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert stderr.rstrip().endswith("rerun the same command to resume")
    assert not [p for p in out.rglob("*") if p.name.endswith(".part")], "the workers finished or removed their files"


def _files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_synthetic_rerun_with_other_settings_is_refused(tmp_path):
    small = ["--clips-per-class", 2, "--test-clips-per-class", 2, "--backgrounds", 1, "--eval-backgrounds", 1,
             "--background-seconds", 1]  # fmt: skip
    out = tmp_path / "c"
    assert _tse("--synthetic", "-o", out, *small).exit_code == 0
    before = _files(out)
    again = _tse("--synthetic", "-o", out, *small)  # the same settings: the same bytes, no complaint
    assert again.exit_code == 0 and _files(out) == before
    other = _tse("--synthetic", "-o", out, *small, "--seed", 5)
    assert other.exit_code == 2
    assert "holds a synthetic corpus made with other settings: seed 0 (now 5)" in other.output, other.output
    assert _files(out) == before, "nothing was written"
    (tmp_path / "real" / "fsd").mkdir(parents=True)
    foreign = _tse("--synthetic", "-o", tmp_path / "real", *small)
    assert foreign.exit_code == 2 and "is not a synthetic corpus written by tse" in foreign.output


def test_piped_output_is_never_wrapped(tmp_path):
    """`tse mix --synthetic | cat`: the suggested command stays one line, however long the path."""
    out = tmp_path / ("a_rather_long_folder_name_" * 4) / "corpus"
    small = ["--clips-per-class", "2", "--test-clips-per-class", "2", "--backgrounds", "1", "--eval-backgrounds", "1",
             "--background-seconds", "1"]  # fmt: skip
    env = {**os.environ, "TSE_PROGRESS_INTERVAL": "0"}
    env.pop("COLUMNS", None)
    done = subprocess.run(
        [sys.executable, "-c", _APP_CODE, "mix", "--synthetic", "-o", str(out), *small],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "", "stdout carries data only"
    suggestion = f"next: tse mix --fsd {out / 'fsd'} --tau {out / 'tau'} -o SET --recipe waveformer --count 200"
    assert suggestion in done.stderr.splitlines(), done.stderr
    assert "writing synthetic corpus: 166 files in" in done.stderr
