"""Atomic writes of files and folders for the whole package, and removal of the temporaries a killed run left.

Everything tse writes goes to a temporary name beside its destination and is renamed onto it (`os.replace`,
atomic on one file system) only once complete, so a reader never sees a partial file under its final name and
an interrupted run leaves the old file (or none) in place. Temporary names are tse's own and name their writer::

    .<name>.tse-<pid>-<8 hex digits>.part      beside <name>: a file being written, or a folder being assembled

A process writing many files into a few folders (`tse mix`) can instead create them in a staging folder of its
own, itself such a temporary (`start_staging`), and rename them from there.

Permissions follow the umask like any other tool's: files are created 0o666 & ~umask and folders 0o777 & ~umask
(never owner-only, as `tempfile.mkstemp`/`mkdtemp` would make them); a file that a library writes by path with its
own mode (safetensors writes 0o600) is set right by `follow_umask`.

`remove_stale(folder)` deletes the ones whose process is gone (killed, crashed, or the machine rebooted), and
nothing else: neither other programs' files nor the temporaries of a tse still running (pids are checked on
this machine only, so a folder shared over the network with a tse running elsewhere should not be cleaned).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from glob import escape as glob_escape
from pathlib import Path

from tse_cli.crashpoints import crash_point

TEMP_SUFFIX = ".part"
_TEMP_NAME = re.compile(r"^\..+\.tse-(\d+)-[0-9a-f]{8}\.part$", re.DOTALL)
_NAME_BYTES = 200  # of the destination's name kept in a temporary's (file names are limited to 255 bytes)


def umask() -> int:
    """The process's umask (read from /proc on Linux; elsewhere set and restored, which races with other threads
    creating files at that instant)."""
    with contextlib.suppress(OSError, ValueError, StopIteration), open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(path: str | Path) -> None:
    """Give a file written by a library with a mode of its own the ordinary mode 0o666 & ~umask."""
    os.chmod(path, 0o666 & ~umask())


def temp_owner(name: str) -> int | None:
    """The pid in a tse temporary name, or None when `name` is not one."""
    match = _TEMP_NAME.match(name)
    return int(match.group(1)) if match else None


def _temp_path(path: Path) -> Path:
    stem = path.name.encode()[:_NAME_BYTES].decode(errors="ignore")
    folder = _STAGING.folder if _STAGING is not None and _STAGING.holds(path) else path.parent
    return folder / f".{stem}.tse-{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}"


# ---- staging: one private folder for a process's temporaries ------------------------------------------------------


class _Staging:
    """This process's staging folder for the files below `root` (see `start_staging`)."""

    def __init__(self, root: Path, folder: Path) -> None:
        self.root = os.path.abspath(root) + os.sep
        self.folder = folder
        self.device = folder.stat().st_dev
        self._held: dict[str, bool] = {}  # destination folder -> whether its temporaries go to `folder`

    def holds(self, path: Path) -> bool:
        """Whether `path`'s temporary is created here: `path` lies in or below `root` and its folder is on the same
        file system (a subfolder may be a link to another one), so that it can be renamed onto `path`."""
        parent = str(path.parent)
        held = self._held.get(parent)
        if held is None:
            inside = (os.path.abspath(parent) + os.sep).startswith(self.root)
            try:
                held = inside and os.stat(parent).st_dev == self.device
            except OSError:  # not made yet: beside the file, as without staging
                return False
            self._held[parent] = held
        return held


_STAGING: _Staging | None = None


def start_staging(root: str | Path) -> Path:
    """From now on create this process's temporaries for files below `root` in one new private folder of `root`,
    `.staging.tse-<pid>-<hex>.part` (a tse temporary itself), instead of beside each file; returns the folder.

    Creating a file holds its folder's lock, and on some file systems the search for a free inode takes long
    (ext4 without a journal skips every inode freed in the last minutes): processes that write many files into
    the same folders then wait on one another. In folders of their own they do not, and the rename out of it is
    quick. Replaces an earlier staging folder of this process. `end_staging` removes the folder; `remove_stale`
    removes one whose process has gone.
    """
    global _STAGING
    end_staging()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _STAGING = _Staging(root, _new_temp_dir(root / "staging"))
    return _STAGING.folder


def end_staging() -> None:
    """Create temporaries beside their files again, and remove this process's staging folder."""
    global _STAGING
    if _STAGING is not None:
        shutil.rmtree(_STAGING.folder, ignore_errors=True)
        _STAGING = None


@contextlib.contextmanager
def staging(root: str | Path) -> Iterator[Path]:
    """`start_staging(root)` for the duration of the block (yields the folder), then `end_staging()`."""
    try:
        yield start_staging(root)
    finally:
        end_staging()


def create_temp(path: str | Path) -> Path:
    """A new empty file under a fresh temporary name beside `path` (its folder must exist); returns its path.

    Created exclusively, with mode 0o666 & ~umask like any ordinary output file.
    """
    tmp, fd = _open_temp(Path(path))
    os.close(fd)
    return tmp


def _open_temp(path: Path) -> tuple[Path, int]:
    """`create_temp`, with the new file left open for writing: (its path, its descriptor)."""
    while True:
        tmp = _temp_path(path)
        with contextlib.suppress(FileExistsError):
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write; rename it onto `path` when the block ends normally and
    delete it when it ends with any exception (KeyboardInterrupt included), so `path` is untouched or complete.
    """
    path = Path(path)
    tmp = create_temp(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes | bytearray | memoryview) -> None:
    """Write a file atomically (see the module docstring): written through the descriptor that created its
    temporary, which is renamed onto `path`, or deleted if anything fails (KeyboardInterrupt included)."""
    path = Path(path)
    tmp, fd = _open_temp(path)
    try:
        with open(fd, "wb") as file:
            file.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Write a UTF-8 text file atomically."""
    write_bytes(path, text.encode())


def write_json(path: str | Path, obj: object) -> None:
    """Write JSON atomically (indented by one space, keys in insertion order, a final newline)."""
    write_text(path, json.dumps(obj, indent=1) + "\n")


def old_copy(directory: Path) -> Path:
    """Where `replace_dir` keeps the folder it replaces while it swaps: `.<name>.old` beside it."""
    return directory.with_name(f".{directory.name}.old")


def replace_dir(staging: Path, directory: Path) -> None:
    """Move a finished `staging` folder to `directory` (same file system), replacing what was there.

    The staged files are flushed to disk first; then an existing `directory` becomes `.<name>.old`, `staging`
    becomes `directory`, and `.<name>.old` is removed. A kill at any point leaves a complete `directory`, or
    (between the two renames) a complete `staging` beside `.<name>.old`: `recover_dir` finishes the swap.
    Crash points (`tse_cli.crashpoints`): `<name>:old-moved` between the renames, `<name>:swapped` after them.
    """
    _fsync_tree(staging)
    old = old_copy(directory)
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        os.replace(directory, old)
        crash_point(f"{directory.name}:old-moved")
    os.replace(staging, directory)
    _fsync_dir(directory.parent)
    crash_point(f"{directory.name}:swapped")
    shutil.rmtree(old, ignore_errors=True)


def complete_copy(directory: Path, staging: Path) -> Path | None:
    """The folder holding the newest complete version of `directory` after a `replace_dir(staging, directory)`
    that a kill may have interrupted (read only): `directory`, else `staging` when `.<name>.old` shows that the
    kill came between the two renames (so `staging` was finished), else `.<name>.old`; None when there is none."""
    if directory.is_dir():
        return directory
    if old_copy(directory).is_dir():
        return staging if staging.is_dir() else old_copy(directory)
    return None


def recover_dir(directory: Path, staging: Path) -> None:
    """Finish a `replace_dir(staging, directory)` that a kill interrupted: afterwards `directory` is the newest
    complete version (or absent if there never was one) and neither `staging` nor `.<name>.old` is left."""
    found = complete_copy(directory, staging)
    if found is not None and found != directory:
        os.replace(found, directory)
        _fsync_dir(directory.parent)
    shutil.rmtree(old_copy(directory), ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)


def _fsync_tree(folder: Path) -> None:
    """Flush the files directly in `folder`, and `folder` itself, to disk."""
    for path in folder.iterdir():
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened and flushed
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_dir(directory: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `directory` to fill; it replaces `directory` (`replace_dir`) when
    the block ends normally and is removed when it ends with any exception."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    folder = _new_temp_dir(directory)
    try:
        yield folder
        replace_dir(folder, directory)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _new_temp_dir(path: Path) -> Path:
    """A new empty folder under a fresh temporary name for `path` (its parent must exist)."""
    while True:
        folder = _temp_path(path)
        with contextlib.suppress(FileExistsError):
            folder.mkdir()
            return folder


def remove_own(path: str | Path) -> None:
    """Delete this process's temporaries for `path` (`.<name>.tse-<this pid>-*.part` beside it): those an
    interruption left between their creation and the `with` block that would have removed them."""
    path = Path(path)
    stem = path.name.encode()[:_NAME_BYTES].decode(errors="ignore")
    for tmp in path.parent.glob(f".{glob_escape(stem)}.tse-{os.getpid()}-*{TEMP_SUFFIX}"):
        if temp_owner(tmp.name) == os.getpid() and tmp.is_file():
            tmp.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists on this machine (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Delete tse temporaries (files or folders, see the module docstring) in `folder` (and below it when
    `recursive`) whose writing process no longer exists; returns what was removed. A missing folder has none."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    found = folder.rglob(f".*{TEMP_SUFFIX}") if recursive else folder.glob(f".*{TEMP_SUFFIX}")
    for path in sorted(found):  # listed before anything is removed (a removed folder may hold more)
        pid = temp_owner(path.name)
        if pid is None or pid == os.getpid() or pid_alive(pid):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed
