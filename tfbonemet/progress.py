"""Progress for steps that take more than a couple of seconds, so a user never waits in silence.

On a terminal (stderr is a TTY) a tqdm bar counts the steps; anywhere else (a log file, a CI job,
a pipe) each stage prints one plain line when it starts, so a log shows what it waited on and
never holds raw ANSI control sequences.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")


def interactive() -> bool:
    """True when stderr is a terminal that can redraw a bar in place."""
    stream = sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)()) and os.environ.get("TERM") != "dumb"


def plural(word: str, n: int) -> str:
    """`word` for one, its plural for any other count: study -> studies, step -> steps."""
    if n == 1:
        return word
    return word[:-1] + "ies" if word.endswith("y") and word[-2:-1] not in "aeiou" else word + "s"


@contextlib.contextmanager
def counter(desc: str, total: int | None = None, log: Callable[[str], object] = print,
            unit: str = "step") -> Iterator[Callable[[int], None]]:
    """A stage of `total` steps; yields `advance(n=1)`. A bar on a terminal, else one line as it starts."""
    if not interactive():
        log(f"{desc} ..." if total is None else f"{desc} ({total} {plural(unit, total)}) ...")
        yield lambda n=1: None
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False) as bar:
        yield bar.update


def stages(items: Iterable[T], desc: str, log: Callable[[str], object] = print,
           name: Callable[[T], str] = str) -> Iterator[T]:
    """Iterate over named stages (export artefacts): a bar showing the current one, else one line each."""
    items = list(items)
    if not interactive():
        for item in items:
            log(f"{desc}: {name(item)} ...")
            yield item
        return
    from tqdm.auto import tqdm

    with tqdm(items, desc=desc, unit="stage", file=sys.stderr, dynamic_ncols=True, leave=False) as bar:
        for item in bar:
            bar.set_postfix_str(name(item))
            yield item


def counting(function: Callable, advance: Callable[[int], None]) -> Callable:
    """`function`, advancing a counter by one per call (e.g. a bootstrap statistic, once per resample)."""
    def wrapped(*args, **kwargs):
        result = function(*args, **kwargs)
        advance(1)
        return result
    return wrapped
