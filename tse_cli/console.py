"""Terminal output for every tse command: the one module that creates rich consoles and progress displays.

Streams. stdout carries only a command's data: tables, JSON lines, audio written to `-o -`. Everything meant
for the person watching goes to stderr: progress, notes, warnings, errors, and `-v/--verbose` details. No line
is wrapped or cropped when a stream is not a terminal (a log or a pipe gets each line whole, however long), and
on a terminal long lines are left for the terminal to wrap, so a printed command can be copied as one line.
Messages are plain text: never parsed as rich markup, so file names with brackets print as they are.

    from tse_cli import console

    console.out().print(table)              # data on stdout (a rich renderable, or text)
    console.note("wrote run/best")          # a line on stderr
    console.warn("a.wav: 12 samples clipped")   # "warning: ..." on stderr
    console.error("a.wav: not an audio file")   # "error: ..." on stderr
    console.detail("device: cuda:0")        # only with -v/--verbose (`set_verbose`)

    with console.progress(quiet=quiet) as display:      # one display per command run
        phase = display.phase("rendering", total=200, unit="mixtures")
        for ...:
            phase.advance(1, info="3 failed")           # `info`: text shown after the counts
        phase.done()                                    # the phase's closing line

A phase shows its label, the count out of its total, the throughput (`unit`/s, or `rate_unit` for a rate that
is better named, e.g. "x real time"), the elapsed time, an ETA and its `info`. On a terminal (stderr a TTY) it
is a live bar, redrawn ten times a second and removed when the phase ends; elsewhere (a log file, a pipe, CI)
the same text is printed as a plain line every `interval` seconds (default 5, or $TSE_PROGRESS_INTERVAL). Either
way `done()` prints one closing line (`label: N unit in 0:12 (16.7 unit/s), info`), so a log of a long run shows
what happened even when nobody watched. `quiet=True` shows no progress and no notes; warnings and errors are
always printed. A `with` block left through an exception removes its live bars without closing lines, so an
error stands alone. While a display is live, `note`, `warn`, `error` and `detail` print above its bars.

`display.phase` may be called from worker threads; updates are cheap (no output unless a line is due).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn
from rich.text import Text

INTERVAL_VARIABLE = "TSE_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 5.0  # seconds between plain progress lines when stderr is not a terminal
PIPE_WIDTH = 100_000  # columns of a console that is not a terminal: wide enough that nothing wraps

_state: dict[str, Any] = {"verbose": False, "display": None}


# ---- consoles ----


def _console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    tty = hasattr(stream, "isatty") and stream.isatty()
    width = None if tty or os.environ.get("COLUMNS") else PIPE_WIDTH
    return Console(stderr=stderr, file=stream, highlight=False, soft_wrap=True, width=width)


def out() -> Console:
    """A console on stdout, for a command's data (tables); as wide as the terminal, unbounded in a pipe."""
    return _console(stderr=False)


def err() -> Console:
    """A console on stderr (prefer `note`/`warn`/`error`, which also print above a live progress display)."""
    return _console(stderr=True)


def _print(text: Any, style: str | None = None, prefix: str = "") -> None:
    line = Text(prefix, style=style) + Text(str(text)) if prefix else Text(str(text))
    display = _state["display"]
    (display.console if display is not None else err()).print(line, soft_wrap=True)


def note(text: str) -> None:
    """Print one informational line on stderr (nothing when the live display is quiet)."""
    display = _state["display"]
    if display is None or display.enabled:
        _print(text)


def warn(text: str) -> None:
    """Print `warning: text` on stderr."""
    _print(text, "yellow", "warning: ")


def error(text: str) -> None:
    """Print `error: text` on stderr (one line: the caller makes sure `text` has no newline)."""
    _print(text, "red", "error: ")


def set_verbose(on: bool) -> None:
    """Switch `-v/--verbose` details on or off for this process (`tse -v CMD` and `CMD -v` both set it)."""
    _state["verbose"] = bool(on)


def verbose() -> bool:
    """Whether `-v/--verbose` details are printed."""
    return _state["verbose"]


def detail(text: str) -> None:
    """Print one line on stderr only with -v/--verbose."""
    if _state["verbose"]:
        _print(text, "dim")


# ---- progress ----


def clock(seconds: float) -> str:
    """`seconds` as H:MM:SS or M:SS."""
    seconds = max(int(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def amount(value: float) -> str:
    """A count as an integer when it is one, else with one decimal (seconds of audio)."""
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


class Phase:
    """One stage of work with a known (or unknown, None) total; made by `Display.phase`, see the module docstring.

    Counts are in `unit` (e.g. "steps", "files", "s"); `completed` starts a phase part-way (a resumed epoch),
    and the throughput counts only what this phase did.
    """

    def __init__(
        self,
        display: Display,
        label: str,
        total: float | None,
        unit: str,
        completed: float,
        rate_unit: str | None,
        rate_scale: float,
    ) -> None:
        self.display, self.label, self.total, self.unit = display, label, total, unit
        self.completed = self._start_count = completed
        self.rate_unit, self.rate_scale = rate_unit or f"{unit}/s", rate_scale
        self.info = ""
        self.start = self._last_line = time.monotonic()
        self.finished = False
        self._task: Any = None

    def rate(self, now: float | None = None) -> float | None:
        """Throughput since the phase started (units per second x `rate_scale`), None before any."""
        elapsed = (time.monotonic() if now is None else now) - self.start
        done = self.completed - self._start_count
        return done / elapsed * self.rate_scale if elapsed > 0 and done > 0 else None

    def stats(self, now: float | None = None) -> str:
        """`120/400 steps, 3.2 steps/s, 0:37, eta 1:27` (what follows the label and bar)."""
        now = time.monotonic() if now is None else now
        count = f"{amount(self.completed)}/{amount(self.total)}" if self.total is not None else amount(self.completed)
        parts = [f"{count} {self.unit}"]
        rate = self.rate(now)
        if rate is not None:
            parts.append(f"{rate:.3g} {self.rate_unit}")
        parts.append(clock(now - self.start))
        if rate is not None and self.total is not None and self.total > self.completed:
            parts.append(f"eta {clock((self.total - self.completed) * self.rate_scale / rate)}")
        return ", ".join(parts)

    def advance(self, n: float = 1, info: str | None = None) -> None:
        """Count `n` more units done; `info` replaces the trailing text."""
        self.update(completed=self.completed + n, info=info)

    def update(self, completed: float | None = None, total: float | None = None, info: str | None = None) -> None:
        """Set the count, the total or the trailing text."""
        with self.display.lock:
            if completed is not None:
                self.completed = completed
            if total is not None:
                self.total = total
            if info is not None:
                self.info = info
            self.display.changed(self)

    def line(self, now: float | None = None) -> str:
        """The plain progress line: `label: stats, info`."""
        return f"{self.label}: {self.stats(now)}" + (f", {self.info}" if self.info else "")

    def closing_line(self) -> str:
        """`label: N unit in 0:12 (16.7 unit/s), info`."""
        now = time.monotonic()
        rate = self.rate(now)
        speed = f" ({rate:.3g} {self.rate_unit})" if rate is not None else ""
        count = amount(self.completed)
        if self.total is not None and self.total != self.completed:
            count += f"/{amount(self.total)}"
        info = f", {self.info}" if self.info else ""
        return f"{self.label}: {count} {self.unit} in {clock(now - self.start)}{speed}{info}"

    def done(self, info: str | None = None) -> None:
        """End the phase: remove its bar and print its closing line (`info` replaces the trailing text)."""
        with self.display.lock:
            if self.finished:
                return
            if info is not None:
                self.info = info
            self.finished = True
            self.display.ended(self, closing=True)


class Display:
    """The progress display of one command run; see the module docstring. Use `progress()` to make one."""

    def __init__(self, enabled: bool = True, interval: float | None = None) -> None:
        self.enabled = enabled
        self.console = err()
        self.terminal = self.console.is_terminal
        self.interval = _interval() if interval is None else interval
        self.lock = threading.RLock()
        self._live: Any = None
        self._phases: list[Phase] = []

    # phases

    def phase(
        self,
        label: str,
        total: float | None,
        unit: str = "items",
        completed: float = 0,
        rate_unit: str | None = None,
        rate_scale: float = 1.0,
    ) -> Phase:
        """Start a phase of `total` `unit` (None: unknown), `completed` of them already done."""
        with self.lock:
            phase = Phase(self, label, total, unit, completed, rate_unit, rate_scale)
            self._phases.append(phase)
            if self.enabled and self.terminal:
                live = self._start_live()
                phase._task = live.add_task(label, total=total, completed=completed, phase=phase)
            return phase

    def changed(self, phase: Phase) -> None:
        """A phase's count or text changed: update its bar, or print a plain line when one is due."""
        if not self.enabled or phase.finished:
            return
        if phase._task is not None:
            self._live.update(phase._task, completed=phase.completed, total=phase.total)
            return
        now = time.monotonic()
        complete = phase.total is not None and phase.completed >= phase.total  # the closing line follows
        if not self.terminal and not complete and now - phase._last_line >= self.interval:
            phase._last_line = now
            self.console.print(phase.line(now), soft_wrap=True, markup=False)

    def ended(self, phase: Phase, closing: bool) -> None:
        """Remove a phase's bar; print its closing line when `closing`."""
        if phase in self._phases:
            self._phases.remove(phase)
        if phase._task is not None:
            self._live.remove_task(phase._task)
            phase._task = None
        if closing and self.enabled:
            self.console.print(phase.closing_line(), soft_wrap=True, markup=False)

    # the live display (terminal only)

    def _start_live(self) -> Any:
        if self._live is None:
            self._live = Progress(
                TextColumn("{task.description}"),
                BarColumn(bar_width=30),
                _StatsColumn(),
                console=self.console,
                transient=True,
                redirect_stdout=False,  # stdout is data: never captured into the display
                redirect_stderr=True,
            )
            self._live.start()
        return self._live

    def close(self, failed: bool) -> None:
        """End every open phase (closing lines unless `failed`) and stop the live display."""
        with self.lock:
            for phase in list(self._phases):
                phase.finished = True
                self.ended(phase, closing=not failed)
            if self._live is not None:
                self._live.stop()
                self._live = None


def _interval() -> float:
    try:
        return max(float(os.environ.get(INTERVAL_VARIABLE, DEFAULT_INTERVAL)), 0.0)
    except ValueError:
        return DEFAULT_INTERVAL


class _StatsColumn(ProgressColumn):
    """The rich column of a phase's counts, throughput, elapsed time, ETA and info (its `Phase.stats`)."""

    max_refresh = 0.5  # the elapsed time and ETA need no more than two redraws a second

    def render(self, task: Any) -> Text:
        phase: Phase = task.fields["phase"]
        return Text(phase.stats() + (f"  {phase.info}" if phase.info else ""), no_wrap=True)


@contextlib.contextmanager
def progress(quiet: bool = False, interval: float | None = None) -> Iterator[Display]:
    """A `Display` for the duration of the block (see the module docstring); `quiet` disables it."""
    display = Display(enabled=not quiet, interval=interval)
    previous, _state["display"] = _state["display"], display
    try:
        yield display
    except BaseException:
        display.close(failed=True)
        raise
    else:
        display.close(failed=False)
    finally:
        _state["display"] = previous
