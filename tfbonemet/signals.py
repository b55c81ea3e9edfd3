"""SIGTERM and Ctrl-C: a clean stop.

While a command runs, SIGTERM (what a cluster scheduler or `kill` sends) and SIGINT (Ctrl-C) raise
`Stopped`, a KeyboardInterrupt, in the main thread: every `finally` and cleanup block on the way
out runs (temporary files and staging folders are removed, a run keeps its best model and last
finished epoch), and the command line ends with one line and exit status 128 + the signal's
number. A later signal during that cleanup is ignored. Inside `deferred()` (a checkpoint being
written) a signal waits until the block ends, so a stop never cuts a kept file in half.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_state = {"depth": 0, "pending": None}


class Stopped(KeyboardInterrupt):
    """A command stopped by a signal; `hint` (set on the way out) says how to continue."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.hint: str | None = None


def _stop(signum, frame):
    if _state["depth"]:
        _state["pending"] = signum
        return
    for each in SIGNALS:
        signal.signal(each, signal.SIG_IGN)  # cleanup runs undisturbed; the process ends right after
    raise Stopped(signum)


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """Turn SIGTERM and SIGINT into `Stopped` for the block (main thread only; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {each: signal.signal(each, _stop) for each in SIGNALS}
    try:
        yield
    finally:
        for each, handler in previous.items():
            signal.signal(each, handler)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A signal arriving in the block stops the command only once the block has finished."""
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        if not _state["depth"] and _state["pending"] is not None:
            pending, _state["pending"] = _state["pending"], None
            _stop(pending, None)


def reclaim() -> None:
    """Point SIGTERM and SIGINT back at Python where its handler is `_stop` (main thread only). Creating a
    multi-worker strategy installs TensorFlow's own SIGTERM handler (its preemption notifier, which only
    logs "SIGTERM caught") over Python's, which would leave a training worker deaf to SIGTERM."""
    if threading.current_thread() is threading.main_thread():
        for each in SIGNALS:
            if signal.getsignal(each) is _stop:
                signal.signal(each, _stop)


def exit_status(exc: KeyboardInterrupt) -> int:
    """128 + the signal's number, as a shell reports a process ended by that signal."""
    return 128 + getattr(exc, "signum", signal.SIGINT)


def message(exc: KeyboardInterrupt) -> str:
    name = signal.Signals(getattr(exc, "signum", signal.SIGINT)).name
    hint = getattr(exc, "hint", None)
    return f"stopped by {name}" + (" (Ctrl-C)" if name == "SIGINT" else "") + (f"; {hint}" if hint else
                                                                              "; nothing half-written was kept")
