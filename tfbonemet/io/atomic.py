"""Writing files so that nothing is half-written and everything is readable by others.

Every file goes to a temporary name in its own folder and is renamed into place (an atomic step
on one file system), so a killed process leaves either the old file or the new one: whole files
through `write_bytes`/`write_text`/`write_json`, streamed ones (a DICOM file, an image, an .npz)
through `open_for_write`. Files get 0644 and folders 0755 whatever the umask of tempfile's
0600/0700 defaults: a model server running as another user must be able to read an export.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator

from tfbonemet.errors import ConfigError

FILE_MODE, DIR_MODE = 0o644, 0o755
PART = ".part"  # suffix of files being written; a later run removes the ones a killed run left


def no_space(exc: BaseException) -> bool:
    """Whether `exc` (an OSError, or a library's own error such as TensorFlow's) says the disk is full."""
    text = str(getattr(exc, "message", None) or exc)
    return getattr(exc, "errno", None) == errno.ENOSPC or "no space left" in text.lower() or "errno = 28" in text


def _fail(path: Path, exc: OSError):
    reason = exc.strerror or type(exc).__name__
    raise ConfigError(f"cannot write {path}: {reason}") from None


def make_dir(path, exist_ok: bool = True) -> Path:
    """Create a folder (and its parents) with mode 0755; a clear error when that is impossible."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=exist_ok, mode=DIR_MODE)
        os.chmod(path, DIR_MODE)
    except FileExistsError:
        raise
    except OSError as exc:
        _fail(path, exc)
    if not os.access(path, os.W_OK):
        raise ConfigError(f"cannot write {path}: folder is not writable")
    return path


def check_writable(path) -> Path:
    """Fail now, before any long work, when folder `path` could not be created or written; creates nothing."""
    path = Path(path)
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"cannot write {path}: {probe} exists and is not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".tfbonemet-probe.", dir=probe))
    except OSError as exc:
        _fail(path, exc)
    return path


@contextlib.contextmanager
def open_for_write(path, mode: str = "wb", **options) -> Iterator[IO]:
    """A file object to stream `path` into (`mode` "wb" or "w"; `options` go to `open`).

    It is written under a hidden temporary name beside `path`; when the block ends it is flushed to
    disk, made 0644 and renamed into place. If the block raises, the temporary file is removed and
    `path` is left as it was; a failure to write is a ConfigError naming `path`.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"open_for_write writes a new file: mode 'wb' or 'w', not {mode!r}")
    path = Path(path)
    tmp = None
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=PART)
        tmp = Path(name)
        with open(fd, mode, **options) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except OSError as exc:
        _discard(tmp)
        _fail(path, exc)
    except BaseException:
        _discard(tmp)
        raise


def _discard(tmp: Path | None) -> None:
    if tmp is not None and tmp.parent.exists():
        tmp.unlink(missing_ok=True)


def write_bytes(path, data: bytes) -> Path:
    with open_for_write(path) as fh:
        fh.write(data)
    return Path(path)


def write_text(path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8", errors="surrogateescape"))


def write_json(path, payload) -> Path:
    return write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=_plain) + "\n")


def _plain(value):
    """numpy scalars and arrays, Paths -> JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


@contextlib.contextmanager
def temporary_name(path) -> Iterator[Path]:
    """A hidden name beside `path` for a library that writes by file name; what it wrote there is made 0644
    and renamed to `path` when the block ends, and removed if the block raises (`path` then stays as it was).

    The name keeps `path`'s suffixes (`.keras`, `.weights.h5`): Keras picks the format by them.
    """
    path = Path(path)
    stem, dot, suffixes = path.name.partition(".")
    tmp = path.with_name(f".{stem}.{os.getpid()}{PART}{dot}{suffixes}")
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, FILE_MODE)
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_model(model, path) -> Path:
    """model.save to a temporary .keras name, then rename."""
    try:
        with temporary_name(path) as tmp:
            model.save(tmp)
    except OSError as exc:
        _fail(Path(path), exc)
    return Path(path)


def staging_dir(parent, prefix: str) -> Path:
    """A hidden, readable temporary folder `<prefix><pid>.<random>` inside `parent`, renamed into place
    when complete; `remove_stale` deletes those whose process has gone."""
    parent = make_dir(parent)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}.", dir=parent))
        os.chmod(staging, DIR_MODE)
    except OSError as exc:
        _fail(parent, exc)
    return staging


def publish_dir(staging: Path, target: Path) -> Path:
    """Rename a complete staging folder into place, making every file and folder in it readable."""
    for root, dirs, files in os.walk(staging):
        for name in dirs:
            os.chmod(os.path.join(root, name), DIR_MODE)
        for name in files:
            os.chmod(os.path.join(root, name), FILE_MODE)
    os.chmod(staging, DIR_MODE)
    os.rename(staging, target)
    return target


def remove_stale(parent, pattern: str, keep=None) -> list[Path]:
    """Delete what killed processes left in `parent` (staging folders, .part files) matching `pattern`,
    except entries whose name holds the pid of a live process, or for which `keep(path)` is true."""
    parent = Path(parent)
    removed = []
    if not parent.is_dir():
        return removed
    for stale in sorted(parent.glob(pattern)):
        if _owner_alive(stale) or (keep is not None and keep(stale)):
            continue
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
        removed.append(stale)
    return removed


def _owner_alive(path: Path) -> bool:
    """True when a number in the name (`.name.<pid>.…`) is the pid of a running process: ours, or another
    one's. Every number counts (a file name may hold digits of its own before the pid)."""
    for part in path.name.split("."):
        if part.isdigit():
            if int(part) == os.getpid():
                return True
            try:
                os.kill(int(part), 0)
                return True
            except ProcessLookupError:
                continue
            except (PermissionError, OverflowError):
                return True
    return False
