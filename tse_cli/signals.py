"""SIGINT, SIGTERM and SIGHUP end a command the same way: its temporary files are deleted, and the exit code is
128 + the signal's number (130 Ctrl-C, 143 `kill`, 129 a closed terminal).

Two phases, each a context manager that restores the previous handlers when it ends (unless a signal came: the
process is then ending, and any further signal exits at once):

- `exit_at_once()`: while nothing needs cleaning up (start-up: torch importing, the model loading), a signal ends
  the process there and then. A KeyboardInterrupt raised inside an import can land in a finaliser and be printed
  as "Exception ignored" and forgotten; exiting from the handler cannot be swallowed.
- `cleanup_first()`: while outputs are being written, the first signal raises `Interrupted` (a KeyboardInterrupt)
  in the main thread, so every `with` block deletes its temporary files on the way out; a second signal exits at
  once (what it leaves, tse's own `.part` names, the next run removes: `tse_cli.atomic.remove_stale`).
  `check()` re-raises a signal whose `Interrupted` a finaliser swallowed: call it before declaring work done.
- `stop_when_asked(notice)`: for a loop that stops by itself at a safe point (`tse train`: after the current step,
  once its checkpoint is saved): the first signal is only recorded (`requested()`) and `notice(signum)` called;
  the loop then calls `check()`, which raises `Interrupted`. A second signal exits at once.

`quiet_children()` starts child processes with SIGINT and SIGHUP blocked: a terminal's Ctrl-C or hang-up reaches
the whole process group, and workers leave the decision to their parent instead of printing KeyboardInterrupt
tracebacks (`tse mix`: the parent stops its pool, running tasks finish, pending ones are dropped).

Signals other than these three (SIGKILL, SIGQUIT, ...) end the process without cleanup; their `.part` files are
removed by the next run in that folder. Handlers are installed from the main thread only (elsewhere these are
no-ops, as Python delivers signals to the main thread).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
EXIT_CLOSED = 128 + signal.SIGPIPE  # stdout's reader has gone (`| head`): what a shell reports for `cat`
_received: int | None = None  # the first signal of the current `cleanup_first` phase


class Interrupted(KeyboardInterrupt):
    """A SIGINT, SIGTERM or SIGHUP, raised in the main thread; `exit_code` is 128 + its number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code(err: BaseException) -> int:
    """The exit code for an interruption: 128 + the signal's number; 130 for a plain KeyboardInterrupt."""
    return 128 + int(getattr(err, "signum", signal.SIGINT))


def describe(err: BaseException) -> str:
    """The signal's name for messages (`SIGTERM`); `SIGINT` for a plain KeyboardInterrupt."""
    return signal.Signals(getattr(err, "signum", signal.SIGINT)).name


def _exit_now(signum: int, frame: FrameType | None) -> None:
    with contextlib.suppress(OSError):  # stderr may be gone with the terminal (SIGHUP)
        os.write(2, f"interrupted ({signal.Signals(signum).name})\n".encode())
    os._exit(128 + signum)


def _raise_once(signum: int, frame: FrameType | None) -> None:
    global _received
    _received = signum
    _install(_exit_now)
    raise Interrupted(signum)


def _install(handler: Callable[[int, FrameType | None], None]) -> None:
    for signum in SIGNALS:
        signal.signal(signum, handler)


@contextlib.contextmanager
def _phase(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    _install(handler)
    try:
        yield
    finally:
        if _received is None:
            for signum, old in previous.items():
                signal.signal(signum, old)
        else:  # the process is ending: a second signal (during clean-up or interpreter shutdown) exits at once
            _install(_exit_now)


def exit_at_once() -> contextlib.AbstractContextManager[None]:
    """While nothing needs cleaning up: a signal exits the process at once with 128 + its number."""
    return _phase(_exit_now)


@contextlib.contextmanager
def cleanup_first() -> Iterator[None]:
    """While temporary files exist: the first signal raises `Interrupted`, a second exits at once."""
    global _received
    _received = None
    with _phase(_raise_once):
        yield


def check() -> None:
    """Raise `Interrupted` if a signal came during this `cleanup_first` phase (its first raise may have been
    swallowed by a finaliser running at that moment)."""
    if _received is not None:
        raise Interrupted(_received)


@contextlib.contextmanager
def stop_when_asked(notice: Callable[[int], None] | None = None) -> Iterator[None]:
    """While a loop can stop by itself at a safe point: the first signal is recorded (`requested()`, then
    `check()` raises it) and `notice(signum)` called; a second signal exits at once."""
    global _received
    _received = None

    def record(signum: int, frame: FrameType | None) -> None:
        global _received
        _received = signum
        _install(_exit_now)
        if notice is not None:
            notice(signum)

    with _phase(record):
        yield


def requested() -> int | None:
    """The signal recorded in the current `stop_when_asked` (or `cleanup_first`) phase, if any."""
    return _received


@contextlib.contextmanager
def quiet_children() -> Iterator[None]:
    """Block SIGINT and SIGHUP in this thread while child processes are started, so that they inherit them
    blocked (the mask survives fork and exec); signals that arrive meanwhile are delivered here once the block
    ends. SIGTERM stays as it is (a `kill` of the whole group still ends the workers)."""
    from multiprocessing import resource_tracker

    terminal = {signal.SIGINT, signal.SIGHUP}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, terminal)
    try:
        # multiprocessing starts its resource tracker at the first pool and then *unblocks* SIGINT in the calling
        # thread (it blocked it for the tracker): start it here, under the block (so a hang-up spares it too),
        # and block again
        resource_tracker.ensure_running()
        signal.pthread_sigmask(signal.SIG_BLOCK, terminal)
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def stdout_closed() -> None:
    """Point standard output at /dev/null once its reader has gone (`| head`: what SIGPIPE would end, which Python
    turns into BrokenPipeError): Python would otherwise report the error again when it flushes stdout at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
