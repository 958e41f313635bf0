"""Fault injection for tests: `crash_point(name)` kills this process (SIGKILL) where `TSE_TEST_CRASH_AT` says.

`TSE_TEST_CRASH_AT=NAME` kills the process the first time it reaches the point NAME, `NAME@K` the K-th time.
A kill leaves the files exactly as a power cut or an OOM killer would at that point (no clean-up runs), which
is what the recovery code must handle. Only tests set the variable; unset, a point costs one lookup.
The points of `tse train` are listed in `tse_cli.train.run_folder`.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

VARIABLE = "TSE_TEST_CRASH_AT"
_reached: Counter[str] = Counter()


def crash_point(name: str) -> None:
    """SIGKILL this process if `TSE_TEST_CRASH_AT` names this point (and this is its K-th time, for `NAME@K`)."""
    wanted = os.environ.get(VARIABLE)
    if not wanted:
        return
    point, _, nth = wanted.partition("@")
    if point != name:
        return
    _reached[name] += 1
    if _reached[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
