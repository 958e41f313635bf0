"""What every module needs to turn a foreign exception into the one-line message users see."""

from __future__ import annotations


def first_line(err: BaseException) -> str:
    """The first line of `err`'s message (stripped), or its type name when the message is empty: libraries (torch,
    numpy, soundfile) often raise multi-line messages, and `tse` errors are one line each."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def os_reason(err: BaseException) -> str:
    """An OS error's reason without its errno and file name ("No space left on device"), else `first_line`."""
    return err.strerror if isinstance(err, OSError) and err.strerror else first_line(err)


class DataError(ValueError):
    """A data set that cannot be used (`tse mix` sources, a `tse train` / `tse eval` data folder): the message
    is one line naming the file or folder and what is wrong with it."""
