"""The folder lock of `tse mix`: one run at a time writes a set."""

from __future__ import annotations

import os
from pathlib import Path

from tse_cli.atomic import pid_alive
from tse_cli.data.layout import LOCK_FILE
from tse_cli.errors import DataError


class FolderLock:
    """`OUT/.tse-mix.lock` (holding the pid) while a run writes a set; a lock left by a dead process is taken over.

    Raises `DataError` when a live process holds it.
    """

    def __init__(self, root: Path) -> None:
        self.path = root / LOCK_FILE

    def __enter__(self) -> FolderLock:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and pid_alive(pid):
                    raise DataError(f"{self.path.parent}: another tse mix (pid {pid}) is writing this folder") from None
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(str(os.getpid()))
            return self
        raise DataError(f"{self.path}: cannot take the lock")

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)
