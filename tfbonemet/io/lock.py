"""One process at a time on a run directory, a dataset build, an export or a predictions file.

`exclusive(path, what)` holds an advisory lock (flock) on a hidden lock file for the block. A second
tfbonemet process asking for the same lock is refused at once with one line naming what is busy and
the process holding it; it never writes beside the first. The operating system drops the lock when
its process ends, however it ends (a SIGKILL too), so a lock is never left held; the lock file
itself is removed when the block ends.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from tfbonemet.errors import ConfigError

LOCK_SUFFIX = ".lock"


@contextlib.contextmanager
def exclusive(path, what: str) -> Iterator[Path]:
    """Hold lock file `path` for the block; ConfigError if another process holds it (`what` names what is busy)."""
    path = Path(path)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(f"{what} is in use by another tfbonemet process (pid {holder}); wait for it to "
                              f"finish (its lock: {path})") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed the file as we opened it: lock the new one
    try:
        with contextlib.suppress(OSError):  # the holder's pid only informs; a full disk must not stop the lock
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)
