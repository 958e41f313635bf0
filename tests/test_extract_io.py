"""`tse extract` through the real CLI: pipes (stdin, stdout, --json on a terminal), output formats and names,
one output per class (--each), clip modes, residuals added to a finished folder, the default model."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from test_extract_cli import ROOT, json_lines, run, write
from torch import nn

from tse_cli.audio import FORMATS

TSE = str(ROOT / ".venv/bin/tse")


def tse(*args: str | Path, stdin: bytes = b"", timeout: int = 300) -> subprocess.CompletedProcess:
    """The installed console script in a subprocess, with bytes in and out."""
    return subprocess.run([TSE, *map(str, args)], input=stdin, capture_output=True, timeout=timeout)


# pipes ---------------------------------------------------------------------------------------------------------


def read_all(fd: int, into: bytearray) -> None:
    """Drain a pty master until the child closes its side (EIO on Linux)."""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return
        if not chunk:
            return
        into.extend(chunk)


@pytest.mark.parametrize("stdout", ["pipe", "pty"])
def test_json_lines_reach_stdout_while_progress_draws_on_a_terminal(tmp_path: Path, tiny: Path, stdout: str) -> None:
    """stderr is a terminal (the progress display is live) and stdout a pipe (`| wc -l`) or a terminal too: stdout
    gets exactly one JSON line per input and nothing else, whatever the display does."""
    inputs = [write(tmp_path / "in" / f"{i}.wav", frames=44100, seed=i) for i in range(3)]
    err_master, err_slave = pty.openpty()
    out_master, out_slave = pty.openpty() if stdout == "pty" else (None, subprocess.PIPE)
    env = os.environ | {"TERM": "xterm-256color", "COLUMNS": "120"}
    cmd = [TSE, "extract", str(tmp_path / "in"), "-c", "Bark", "--checkpoint", str(tiny), "-O", str(tmp_path / "o")]
    proc = subprocess.Popen([*cmd, "--json", "--block-size", "4096"], stdout=out_slave, stderr=err_slave, env=env)
    os.close(err_slave)
    err, out = bytearray(), bytearray()
    readers = [threading.Thread(target=read_all, args=(err_master, err))]
    if out_master is not None:
        os.close(out_slave)
        readers.append(threading.Thread(target=read_all, args=(out_master, out)))
    for reader in readers:
        reader.start()
    if out_master is None:
        out.extend(proc.stdout.read())
    assert proc.wait(timeout=300) == 0, err.decode(errors="replace")
    for reader in readers:
        reader.join(timeout=10)
    lines = out.decode().replace("\r\n", "\n").splitlines()
    assert len(lines) == len(inputs), out
    records = [json.loads(line) for line in lines]
    assert sorted(Path(r["input"]).name for r in records) == ["0.wav", "1.wav", "2.wav"]
    assert all(r["status"] == "done" for r in records)
    assert b"\x1b[" not in out, "no terminal control codes in the data"
    assert b"done, 0 skipped" in err


@pytest.mark.parametrize(("given", "fmt"), [("flac", None), ("ogg", "flac"), ("wav", "wav")])
def test_stdin_to_stdout_equals_the_file_path_result(tmp_path: Path, tiny: Path, given: str, fmt: str | None) -> None:
    source = tmp_path / f"mix.{given}"
    sf.write(str(source), (np.random.default_rng(1).standard_normal((6000, 2)) * 0.1).astype(np.float32), 44100)
    fmt_args = ("--format", fmt) if fmt else ()
    reference = tmp_path / f"ref.{fmt or 'wav'}"
    # both in a subprocess: the same threads, so the same floating-point sums (in-process tests run on one)
    assert tse("extract", source, "-c", "Cough", "--checkpoint", tiny, "-o", reference, *fmt_args).returncode == 0
    piped = tse("extract", "-", "-c", "Cough", "--checkpoint", tiny, "-o", "-", *fmt_args, stdin=source.read_bytes())
    assert piped.returncode == 0, piped.stderr.decode()
    assert piped.stdout == reference.read_bytes(), "stdout holds exactly the file -o would have written"
    assert b"- -> -" in piped.stderr and b"1 done" in piped.stderr


def test_json_reader_gone_stops_the_batch_with_141(tmp_path: Path, tiny: Path) -> None:
    """`tse extract DIR --json | head -1`: once stdout's reader has gone, tse stops as any pipeline's writer does:
    exit 141 (128 + SIGPIPE) and one line saying how far it got, finished outputs whole, no temporaries left."""
    for i in range(4):
        write(tmp_path / "in" / f"{i}.wav", frames=22050, seed=i)
    read, written = os.pipe()
    os.close(read)  # the reader has gone before the first JSON line: deterministic, whatever the speed
    cmd = [TSE, "extract", tmp_path / "in", "-c", "Bark", "--checkpoint", tiny, "-O", tmp_path / "o", "--json"]
    done = subprocess.run(list(map(str, cmd)), stdout=written, stderr=subprocess.PIPE, timeout=300)
    os.close(written)
    stderr = done.stderr.decode()
    assert done.returncode == 141, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert stderr.strip().splitlines()[-1].startswith("stopped after 1 of 4 inputs: standard output was closed")
    outputs = sorted((tmp_path / "o").iterdir())
    assert [p.name for p in outputs] == ["0_Bark.wav"], "the finished output is kept, nothing else is left"
    assert sf.info(str(outputs[0])).frames == 22050


def test_pipe_usage_errors(tmp_path: Path, tiny: Path) -> None:
    mix = write(tmp_path / "mix.wav")
    cases = {
        ("-o", "-", "--json"): "--json needs -o FILE or -O DIR",
        ("-o", "-", "--residual"): "--residual needs -o FILE or -O DIR",
    }
    for extra, message in cases.items():
        result = run("extract", mix, "-c", "Cough", "--checkpoint", tiny, *extra)
        assert result.exit_code == 2 and message in result.stderr, result.stderr
    two = run("extract", "-", mix, "-c", "Cough", "--checkpoint", tiny, "-O", tmp_path / "o")
    assert two.exit_code == 2 and "give it alone" in two.stderr
    empty = tse("extract", "-", "-c", "Cough", "--checkpoint", tiny, "-o", tmp_path / "x.wav")
    assert empty.returncode == 2 and empty.stderr.decode().strip() == "error: -: standard input is empty (0 bytes)"
    junk = tse("extract", "-", "-c", "Cough", "--checkpoint", tiny, "-o", "-", stdin=b"not audio at all" * 10)
    assert junk.returncode == 1 and junk.stdout == b""
    (line,) = junk.stderr.decode().strip().splitlines()[:1]
    assert line.startswith("error: -: not a readable audio file"), junk.stderr


# formats and names ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["flac", "ogg", "opus", "mp3", "aiff"])
def test_format_from_option_or_suffix(tmp_path: Path, tiny: Path, name: str) -> None:
    if name not in FORMATS:
        pytest.skip(f"this libsndfile does not write {name}")
    fmt = FORMATS[name]
    mix = write(tmp_path / "in" / "mix.wav", frames=8820)
    by_option = run(
        "extract", tmp_path / "in", "-c", "Cough", "--checkpoint", tiny, "-O", tmp_path / "a", "--format", name
    )
    by_suffix = run("extract", mix, "-c", "Cough", "--checkpoint", tiny, "-o", tmp_path / f"b.{name}")
    assert by_option.exit_code == 0 and by_suffix.exit_code == 0, by_option.stderr + by_suffix.stderr
    for path in (tmp_path / "a" / f"mix_Cough.{name}", tmp_path / f"b.{name}"):
        info = sf.info(str(path))
        assert info.format == fmt.major and (fmt.codec is None or info.subtype == fmt.codec), path
        assert info.samplerate == fmt.storable_rate(44100) and info.channels == 1
        assert abs(info.frames - 8820 * info.samplerate // 44100) < 4000  # lossy codecs pad their last frame


def test_filename_suffix_decides_or_must_agree(tmp_path: Path, tiny: Path) -> None:
    mix = write(tmp_path / "in" / "mix.wav")
    common = ("extract", tmp_path / "in", "-c", "Cough", "--checkpoint", tiny)
    decided = run(*common, "-O", tmp_path / "a", "--filename", "{stem}.flac")
    assert decided.exit_code == 0, decided.stderr
    assert sf.info(str(tmp_path / "a" / "mix.flac")).format == "FLAC"
    refused = {
        ("--filename", "{stem}.wav", "--format", "flac"): "does not end in .flac (--format flac)",
        ("--filename", "{stem}"): "gives names without a suffix",
        ("--filename", "{stem}_{target}"): "gives names without a suffix",
        ("--filename", "{stem}.m4a"): "cannot write .m4a files",
    }
    for extra, message in refused.items():
        result = run(*common, "-O", tmp_path / "b", *extra)
        assert result.exit_code == 2 and message in result.stderr, (extra, result.stderr)
    assert not (tmp_path / "b").exists()
    assert (
        run("extract", mix, "-c", "Cough", "--checkpoint", tiny, "-o", tmp_path / "x.wav", "--format", "flac").exit_code
        == 2
    )


# one output per class ------------------------------------------------------------------------------------------


def test_each_writes_one_output_per_class_equal_to_separate_runs(tmp_path: Path, tiny: Path, monkeypatch) -> None:
    from tse_cli.engine import files

    write(tmp_path / "in" / "a.wav", channels=2, frames=9000, seed=1)
    write(tmp_path / "in" / "b.wav", frames=7000, seed=2)
    common = ("extract", tmp_path / "in", "--checkpoint", tiny, "--residual", "--subtype", "FLOAT")
    for name in ("Bark", "Cough"):
        assert run(*common, "-c", name, "-O", tmp_path / name).exit_code == 0
    opened: list[object] = []
    reader = files.BlockReader
    monkeypatch.setattr(files, "BlockReader", lambda *a: opened.append(a) or reader(*a))
    each = run(*common, "-c", "Bark", "-c", "Cough", "--each", "-O", tmp_path / "each", "--json")
    assert each.exit_code == 0, each.stderr
    assert len(opened) == 2, "each input is read once for both classes"
    records = json_lines(each.stdout)
    assert sorted((Path(r["input"]).name, r["target"]) for r in records) == [
        ("a.wav", "Bark"),
        ("a.wav", "Cough"),
        ("b.wav", "Bark"),
        ("b.wav", "Cough"),
    ]
    for name in ("Bark", "Cough"):
        for stem in ("a", "b"):
            for suffix in ("", "_residual"):
                together = sf.read(str(tmp_path / "each" / f"{stem}_{name}{suffix}.wav"))[0]
                alone = sf.read(str(tmp_path / name / f"{stem}_{name}{suffix}.wav"))[0]
                np.testing.assert_allclose(together, alone, atol=1e-6)  # batched rows: float rounding only
    union = run("extract", tmp_path / "in", "--checkpoint", tiny, "-c", "Bark", "-c", "Cough", "-O", tmp_path / "u")
    assert union.exit_code == 0 and (tmp_path / "u" / "a_Bark+Cough.wav").is_file()


def test_each_needs_an_output_folder_and_target_names(tmp_path: Path, tiny: Path) -> None:
    mix = write(tmp_path / "mix.wav")
    common = ("extract", mix, "--checkpoint", tiny, "-c", "Bark", "-c", "Cough", "--each")
    assert "give -O DIR" in run(*common, "-o", tmp_path / "x.wav").stderr
    result = run(*common, "-O", tmp_path / "o", "--filename", "{stem}.{ext}")
    assert result.exit_code == 2 and "needs {target}" in result.stderr


# clipping ------------------------------------------------------------------------------------------------------


class Doubler(nn.Module):
    """A window model whose estimate is twice the mixture (so the residual is minus the mixture)."""

    sample_rate = 44100
    clue_kind = "class"
    clue_rate = None
    max_classes = None
    inference_options = ()
    takes_progress = False
    window_samples = 44100

    def forward(self, mixture: torch.Tensor, clue: torch.Tensor) -> torch.Tensor:
        return 2 * mixture


def test_clip_counts_name_their_file_and_modes_apply(tmp_path: Path, stand_in) -> None:
    stand_in(Doubler())
    x = np.tile(np.array([0.1, 0.6, -1.2, 0.2], np.float32), 100)  # estimate: 200 beyond 1; residual: 100
    (tmp_path / "in").mkdir()
    sf.write(str(tmp_path / "in" / "a.wav"), x, 44100, subtype="FLOAT")
    common = ("extract", tmp_path / "in", "-c", "Bark", "--residual", "--subtype", "PCM_16")
    clamp = run(*common, "-O", tmp_path / "clamp", "--json")
    assert clamp.exit_code == 0, clamp.stderr
    (record,) = json_lines(clamp.stdout)
    assert (record["clipped"], record["residual_clipped"]) == (200, 100)
    warnings = [line for line in clamp.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: {tmp_path / 'clamp' / 'a_Bark.wav'}: 200 samples clipped to [-1, 1] (--clip-mode rescale scales "
        "the file instead; --subtype FLOAT keeps them)",
        f"warning: {tmp_path / 'clamp' / 'a_Bark_residual.wav'}: 100 samples clipped to [-1, 1] (--clip-mode "
        "rescale scales the file instead; --subtype FLOAT keeps them)",
    ]
    rescale = run(*common, "-O", tmp_path / "rescale", "--clip-mode", "rescale", "--json")
    (record,) = json_lines(rescale.stdout)
    assert (record["clipped"], record["residual_clipped"]) == (0, 0)
    assert record["gain"] == pytest.approx(1 / 2.4, abs=1e-6) and record["residual_gain"] == pytest.approx(1 / 1.2)
    y, _ = sf.read(str(tmp_path / "rescale" / "a_Bark.wav"), dtype="float32")
    np.testing.assert_allclose(y, 2 * x / 2.4, atol=2**-15)
    assert "warning" not in rescale.stderr
    none = run("extract", tmp_path / "in", "-c", "Bark", "-O", tmp_path / "none", "--clip-mode", "none", "--json")
    (record,) = json_lines(none.stdout)
    y, _ = sf.read(str(tmp_path / "none" / "a_Bark.wav"), dtype="float32")
    np.testing.assert_array_equal(y, 2 * x)  # float output: every value kept
    assert record["clipped"] == 0 and "warning" not in none.stderr
    bad = run(*common, "-O", tmp_path / "bad", "--clip-mode", "fold")
    assert bad.exit_code == 2 and "--clip-mode must be one of clamp, rescale, none" in bad.stderr


# finished folders, empty inputs, the default model -------------------------------------------------------------


def test_residual_added_to_a_finished_folder_keeps_the_mains(tmp_path: Path, tiny: Path) -> None:
    for i in range(2):
        write(tmp_path / "in" / f"{i}.wav", seed=i)
    common = ("extract", tmp_path / "in", "-c", "Cough", "--checkpoint", tiny, "-O", tmp_path / "o")
    assert run(*common).exit_code == 0
    mains = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (tmp_path / "o").iterdir()}
    added = run(*common, "--residual", "--json")
    assert added.exit_code == 0, added.stderr
    records = json_lines(added.stdout)
    assert [r["status"] for r in records] == ["done", "done"] and all(r["kept"] == [r["output"]] for r in records)
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in mains} == mains, "the mains are left as they were"
    with_residual = tmp_path / "with"
    assert run(*common[:-1], with_residual, "--residual").exit_code == 0
    for i in range(2):
        ours = (tmp_path / "o" / f"{i}_Cough_residual.wav").read_bytes()
        assert ours == (with_residual / f"{i}_Cough_residual.wav").read_bytes()
    again = run(*common, "--residual", "--json")
    assert [r["status"] for r in json_lines(again.stdout)] == ["skipped", "skipped"]


def test_empty_folder_and_unmatched_glob_fail_alike(tmp_path: Path, tiny: Path) -> None:
    (tmp_path / "empty").mkdir()
    hint = " (-r/--recursive descends into subfolders)"
    cases = {
        tmp_path / "empty": f"error: {tmp_path / 'empty'}: a folder with no audio files{hint}",
        tmp_path / "none*.wav": f"error: {tmp_path / 'none*.wav'}: no audio files match",
    }
    for source, line in cases.items():
        result = run("extract", source, "-c", "Cough", "--checkpoint", tiny, "-O", tmp_path / "o", "-q")
        assert (result.exit_code, result.stderr) == (1, line + "\n"), source


def test_default_model_is_waveformer_and_offline_says_how_to_get_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("TSE_CACHE", raising=False)
    result = run("extract", write(tmp_path / "mix.wav"), "-c", "Cough", "-o", tmp_path / "out.wav", "-q")
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: cannot load model 'waveformer'")
    assert "tse models download waveformer" in line and "--model demo" in line
    named = run("extract", tmp_path / "mix.wav", "-c", "Cough", "--model", "waveformer", "-o", tmp_path / "o.wav")
    assert "--model demo" not in named.stderr, "the demo hint is for the default only"


def test_help_names_every_format_tse_knows() -> None:
    from tse_cli.audio import _KNOWN_FORMATS
    from tse_cli.commands.extract import FORMAT_NAMES

    assert FORMAT_NAMES.split(", ") == [f.name for f in _KNOWN_FORMATS]
