"""What every module needs to turn a foreign exception into the one-line message users see.

Failed reads and writes are named in the operating system's words ("No space left on device"), also where a
library hides the errno in its text: safetensors wraps Rust's `io::Error` ("I/O error: No space left on device
(os error 28)", or `Os { code: 28, ... }`).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator

_RUST_OS_ERROR = re.compile(r"Os \{ code: (\d+)|\(os error (\d+)\)")


def first_line(err: BaseException) -> str:
    """The first line of `err`'s message (stripped), or its type name when the message is empty: libraries (torch,
    numpy, soundfile) often raise multi-line messages, and `tse` errors are one line each."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def os_reason(err: BaseException) -> str:
    """An OS error's reason without its errno and file name ("No space left on device"), also for a library error
    that carries an errno in its text (`errno_of`), else `first_line`."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    code = errno_of(err)
    return os.strerror(code) if code else first_line(err)


def errno_of(err: BaseException) -> int | None:
    """The errno behind `err` (an OSError, or a library error that carries one in its text), else None."""
    if isinstance(err, OSError) and err.errno:
        return err.errno
    match = _RUST_OS_ERROR.search(str(err))
    return int(match[1] or match[2]) if match else None


@contextlib.contextmanager
def as_os_error() -> Iterator[None]:
    """Re-raise a library error that carries an errno (safetensors' Rust io errors) as that OSError."""
    try:
        yield
    except OSError:
        raise
    except Exception as err:
        code = errno_of(err)
        if code is None:
            raise
        raise OSError(code, os.strerror(code)) from err


class DataError(ValueError):
    """A data set that cannot be used (`tse mix` sources, a `tse train` / `tse eval` data folder): the message
    is one line naming the file or folder and what is wrong with it."""
