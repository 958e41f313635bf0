"""`tse_cli.console`: data on stdout only, progress on stderr as plain periodic lines in a log and as a live bar
(with throughput and ETA) on a terminal, no stray bar after an error, nothing wrapped in a pipe."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tse_cli import console

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

SCRIPT = textwrap.dedent(
    """
    import sys, time
    from tse_cli import console
    with console.progress() as display:
        phase = display.phase("epoch 1/2", total=8, unit="steps")
        for i in range(8):
            time.sleep(0.05)
            phase.advance(1, info=f"loss {1 / (i + 1):.3f}")
        phase.done()
        console.note("a long note " + "x" * 150)
    print("DATA")
    if sys.argv[1:] == ["fail"]:
        with console.progress() as display:
            display.phase("validation", total=5, unit="examples")
            raise SystemExit(console.error("it broke") or 3)
    """
)


def run_script(tmp_path: Path, *args: str, terminal: bool) -> tuple[str, str, int]:
    """(stdout, stderr, exit code) of SCRIPT with stderr on a pty (`terminal`) or a pipe; stdout is a pipe."""
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "TSE_PROGRESS_INTERVAL": "0.1", "COLUMNS": "100"}
    if not terminal:
        done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=env)
        return done.stdout, done.stderr, done.returncode
    main, other = pty.openpty()
    process = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=other, env=env)
    os.close(other)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the child closed the pty
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    out = process.stdout.read().decode()
    process.wait()
    return out, b"".join(chunks).decode(), process.returncode


def test_a_log_gets_periodic_lines_and_a_closing_line(tmp_path: Path):
    out, err, code = run_script(tmp_path, terminal=False)
    assert code == 0 and out == "DATA\n"
    lines = err.splitlines()
    periodic = [
        line for line in lines if re.fullmatch(r"epoch 1/2: \d/8 steps, [\d.]+ steps/s, 0:00, eta 0:00, .*", line)
    ]
    assert periodic, err  # progress while the phase runs, not only at the end
    assert re.fullmatch(r"epoch 1/2: 8 steps in 0:00 \([\d.]+ steps/s\), loss 0\.125", lines[-2]), lines
    assert lines[-1] == "a long note " + "x" * 150  # one line, not wrapped at 80 or 100 columns
    assert not ANSI.search(err)


def test_a_terminal_gets_a_live_bar_with_rate_and_eta_then_only_the_closing_line(tmp_path: Path):
    out, err, code = run_script(tmp_path, "fail", terminal=True)
    assert out == "DATA\n", "stdout is never captured into the display"
    assert code == 3
    plain = ANSI.sub("", err)
    assert re.search(r"epoch 1/2 .*\d/8 steps, [\d.]+ steps/s, 0:00, eta 0:00", plain), plain
    assert "━" in plain  # the bar
    # what remains on screen: each redraw ends with an erase; the closing line, the note and the error stay
    screen = [part.split("\r")[-1] for part in plain.replace("\r\n", "\n").split("\n")]
    kept = [line for line in screen if line.strip()]
    assert re.fullmatch(r"epoch 1/2: 8 steps in 0:00 \([\d.]+ steps/s\), loss 0\.125", kept[0]), kept
    assert kept[1:] == ["a long note " + "x" * 150, "error: it broke"], kept  # no bar left for "validation"


def test_phase_counts_rates_and_quiet(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    now = [100.0]
    monkeypatch.setattr(console.time, "monotonic", lambda: now[0])
    with console.progress(interval=5) as display:
        phase = display.phase("decoding", total=None, unit="files")
        now[0] += 4
        phase.advance(2)  # not yet a line: 4 s < 5 s
        now[0] += 2
        phase.advance(4)  # 6 files in 6 s
        assert phase.rate() == 1.0
        phase.done()
        resumed = display.phase("epoch 2/3", total=10, unit="steps", completed=4)
        now[0] += 3
        resumed.advance(3, info="loss 0.5")
        assert resumed.rate() == 1.0 and resumed.stats() == "7/10 steps, 1 steps/s, 0:03, eta 0:03"
    assert capsys.readouterr().err.splitlines() == [
        "decoding: 6 files, 1 files/s, 0:06",
        "decoding: 6 files in 0:06 (1 files/s)",
        "epoch 2/3: 7/10 steps in 0:03 (1 steps/s), loss 0.5",  # closed with the display, part-way
    ]
    with console.progress(quiet=True) as display:
        display.phase("hidden", total=1).advance()
        console.note("hidden too")
        console.warn("shown")
    assert capsys.readouterr().err == "warning: shown\n"


def test_an_error_inside_the_display_prints_no_closing_line(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(KeyError), console.progress(interval=0) as display:
        display.phase("validation", total=4, unit="examples").advance()
        raise KeyError("x")
    err = capsys.readouterr().err
    assert " in " not in err  # the periodic line only, no "validation: 1/4 examples in ..." summary


def test_verbose_details_and_clock():
    console.set_verbose(False)
    assert not console.verbose()
    console.set_verbose(True)
    try:
        assert console.verbose()
    finally:
        console.set_verbose(False)
    assert console.clock(59.9) == "0:59" and console.clock(3725) == "1:02:05"
    assert console.amount(3.0) == "3" and console.amount(2.25) == "2.2"


def test_consoles_follow_the_current_streams(capsys: pytest.CaptureFixture[str]):
    console.out().print("table row " + "y" * 200)
    console.error("[not markup] " + "z" * 200)
    captured = capsys.readouterr()
    assert captured.out == "table row " + "y" * 200 + "\n"
    assert captured.err == "error: [not markup] " + "z" * 200 + "\n"


def test_interval_variable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(console.INTERVAL_VARIABLE, "0.5")
    assert console.Display().interval == 0.5
    monkeypatch.setenv(console.INTERVAL_VARIABLE, "soon")
    assert console.Display().interval == console.DEFAULT_INTERVAL
