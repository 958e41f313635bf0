"""tse_cli.signals beyond tse extract's phases: a loop that stops by itself when asked (tse train), and worker
processes that leave Ctrl-C to their parent (tse mix)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tse_cli import signals


@pytest.fixture
def handlers():
    """The test process's handlers of the three signals, put back afterwards (a phase that saw a signal leaves
    `exit at once` installed, as the process is meant to be ending)."""
    saved = {s: signal.getsignal(s) for s in signals.SIGNALS}
    yield saved
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_signal_is_recorded_for_the_loop_and_raised_where_it_checks(handlers, sig: signal.Signals, code: int):
    seen: list[int] = []
    with signals.stop_when_asked(seen.append):
        os.kill(os.getpid(), sig)
        time.sleep(0.01)  # the handler runs, and the work goes on
        assert signals.requested() == sig and seen == [sig]
        with pytest.raises(signals.Interrupted) as err:
            signals.check()
    assert signals.exit_code(err.value) == code and signals.describe(err.value) == sig.name
    assert signal.getsignal(sig) is not handlers[sig], "the process is ending: a further signal exits at once"
    for s, handler in handlers.items():
        signal.signal(s, handler)
    with signals.stop_when_asked():
        assert signals.requested() is None, "a new phase starts with no signal"
    assert signal.getsignal(sig) is handlers[sig], "without a signal the previous handlers come back"


SECOND = textwrap.dedent(
    """
    import time
    from tse_cli import signals
    with signals.stop_when_asked(lambda s: print("stopping", flush=True)):
        print("ready", flush=True)
        time.sleep(60)  # a stop that takes long: only a second signal ends it
    """
)


def test_a_second_signal_exits_at_once_without_a_traceback():
    proc = subprocess.Popen([sys.executable, "-c", SECOND], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout.readline() == "stopping\n"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130 and stderr == "interrupted (SIGINT)\n"


POOL = textwrap.dedent(
    """
    import multiprocessing, signal
    from concurrent.futures import ProcessPoolExecutor
    from tse_cli import signals

    def blocked():
        return sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, []))

    if __name__ == "__main__":
        with signals.quiet_children():  # the first pool of the process: multiprocessing starts its tracker here
            pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))
            workers = [pool.submit(blocked) for _ in range(4)]
        print([w.result() for w in workers], blocked())
    """
)


def test_workers_started_quietly_leave_the_terminal_signals_to_their_parent(tmp_path):
    script = tmp_path / "pool.py"
    script.write_text(POOL)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    terminal = sorted([int(signal.SIGHUP), int(signal.SIGINT)])
    assert out.stdout.strip() == f"{[terminal] * 4} []", out.stderr  # the parent's own mask is back afterwards
