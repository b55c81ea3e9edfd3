"""One process at a time on a run directory, a dataset build, an export or a predictions file.

`exclusive(path, what)` holds an advisory lock (flock) on a hidden lock file for the block. A second
tfbonemet process asking for the same lock is refused at once with one line naming what is busy and
the process holding it; it never writes beside the first. The operating system drops the lock when
its process ends, however it ends (a SIGKILL too), so a lock is never left held; the lock file
itself is removed when the block ends, and `sweep` removes one that a killed process left.

A lock also tells whether a process still writes to a place, on whatever machine it runs (flock over
NFS is a POSIX lock on the server): `unless_held` takes a lock only when no process holds it, and
`sweep` removes temporary files only where no live process holds the lock that covers them.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from tfbonemet.errors import ConfigError
from tfbonemet.io.atomic import PART, remove_stale

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


@contextlib.contextmanager
def unless_held(path) -> Iterator[bool]:
    """Hold lock file `path` for the block if no process holds it (yields True); False at once when one does
    or the lock cannot be taken (a read-only folder), so what a live process owns is never touched."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(exclusive(path, "lock"))
        except ConfigError:
            yield False
            return
        yield True


def sweep(folder, log=None) -> list[Path]:
    """Remove what killed processes left in `folder`: lock files no process holds, and temporary files
    (`.NAME.<pid>….part…`) whose process has gone, except those under a lock a live process holds.
    `log` (if given) gets one line per removed entry; returns the removed paths."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed, busy = [], []
    for lock in sorted(folder.glob(f".*{LOCK_SUFFIX}")):
        with unless_held(lock) as free:
            (removed if free else busy).append(lock)  # a free lock file goes when the block ends
    busy_names = tuple(lock.name[:-len(LOCK_SUFFIX)] + "." for lock in busy)
    removed += remove_stale(folder, f".*{PART}*", keep=lambda path: path.name.startswith(busy_names))
    for path in removed:
        if log and path.suffix != LOCK_SUFFIX:
            log(f"Removed {path}, left by a process that was killed")
    return removed
