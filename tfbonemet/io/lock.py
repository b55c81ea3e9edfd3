"""One process at a time on a run directory, a dataset build, an export or a predictions file.

`exclusive(path, what)` holds an advisory lock (flock) on a hidden lock file for the block. A second
tfbonemet process asking for the same lock is refused at once with one line naming what is busy and
the process holding it; it never writes beside the first. The operating system drops the lock when
its process ends, however it ends (a SIGKILL too), so a lock is never left held; the lock file
itself is removed when the block ends, and `sweep` removes one that a killed process left.

A lock also tells whether a process still writes to a place, on whatever machine it runs (flock over
NFS is a POSIX lock on the server): `unless_held` takes a lock only when no process holds it, and
`sweep` removes temporary files only where no live process holds the lock that covers them.

The workers of one multi-worker training job share their run directory's lock: the chief holds it
(`exclusive` with the job's name, from the cluster in TF_CONFIG) and every other worker `join`s it,
so a second job, or a single `fit --resume`, naming the same run directory is refused.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from pathlib import Path
from typing import Iterator

from tfbonemet.errors import ConfigError
from tfbonemet.io.atomic import PART, remove_stale

LOCK_SUFFIX = ".lock"


@contextlib.contextmanager
def exclusive(path, what: str, job: str = "") -> Iterator[Path]:
    """Hold lock file `path` for the block; ConfigError if another process holds it (`what` names what is busy).

    `job` names the multi-process job the holder leads (its workers `join` the lock, other jobs are refused)."""
    path = Path(path)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
        if not _take(fd):
            holder = _holder(fd)[0]
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
            os.write(fd, f"{os.getpid()}{' ' + job if job else ''}\n".encode())
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)


def _take(fd: int, tries: int = 20) -> bool:
    """flock `fd` exclusively; a worker's `join` holds it shared for an instant, so a few short retries."""
    for attempt in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt + 1 < tries:
                time.sleep(0.05)
    return False


def _holder(fd: int) -> tuple[str, str]:
    """(pid, job) written in a held lock file ("unknown", "" when it holds neither yet)."""
    text = os.pread(fd, 200, 0).decode(errors="replace").split()
    return (text[0] if text else "unknown"), (text[1] if len(text) > 1 else "")


def join(path, what: str, job: str) -> None:
    """A worker of multi-process job `job` (which writes nothing itself) checks the lock its chief holds:
    refused when a process of another job, or a single tfbonemet process, holds it; nothing when none does."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # no lock file: no process holds it (yet)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            for _ in range(40):  # the holder writes its pid and job just after it takes the lock
                holder, holder_job = _holder(fd)
                if holder != "unknown":
                    break
                time.sleep(0.05)
            if holder_job != job:
                raise ConfigError(f"{what} is in use by another tfbonemet {'job' if holder_job else 'process'} "
                                  f"(pid {holder}); wait for it to finish or give this job another --run-name "
                                  f"(its lock: {path})") from None
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
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


def _ours(lock: Path) -> bool:
    """Whether a lock file is one `exclusive` wrote: empty, or its holder's pid and job (another program's
    lock file is never touched)."""
    try:
        return lock.is_file() and re.fullmatch(r"(\d+( \S+)?\n?)?", lock.read_text(errors="replace")) is not None
    except OSError:
        return False


def sweep(folder, log=None) -> list[Path]:
    """Remove what killed processes left in `folder`: lock files no process holds, and temporary files
    (`.NAME.<pid>….part…`) whose process has gone, except those under a lock a live process holds.
    `log` (if given) gets one line per removed entry; returns the removed paths."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed, busy = [], []
    for lock in sorted(folder.glob(f".*{LOCK_SUFFIX}")):
        if not _ours(lock):
            continue  # another program's lock file
        with unless_held(lock) as free:
            (removed if free else busy).append(lock)  # a free lock file goes when the block ends
    busy_names = tuple(lock.name[:-len(LOCK_SUFFIX)] + "." for lock in busy)
    removed += remove_stale(folder, f".*{PART}*", keep=lambda path: path.name.startswith(busy_names) or not any(
        part.isdigit() for part in path.name.split(".")))  # a temporary name holds its writer's pid
    for path in removed:
        if log and path.suffix != LOCK_SUFFIX:
            log(f"Removed {path}, left by a process that was killed")
    return removed
