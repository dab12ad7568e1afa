"""Rich progress bars for anything that may take over a second.

Bars go to stderr and are shown only when stderr is a terminal (or ``INVDESIGN_PROGRESS=1``),
so pipes, tests and CI logs stay clean. ``INVDESIGN_PROGRESS=0`` turns them off.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


def enabled() -> bool:
    flag = os.environ.get("INVDESIGN_PROGRESS")
    if flag is not None:
        return flag not in ("0", "", "false", "no")
    return sys.stderr.isatty()


def _progress():
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=not enabled(),
    )


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` with a progress bar labelled ``description``."""
    if not enabled():
        yield from items
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with _progress() as prog:
        task = prog.add_task(description, total=total)
        for item in items:
            yield item
            prog.advance(task)


@contextmanager
def task(description: str, total: float | None = None):
    """Context manager yielding ``advance(n=1)`` for manual progress updates."""
    if not enabled():
        yield lambda n=1: None
        return
    with _progress() as prog:
        t = prog.add_task(description, total=total)
        yield lambda n=1: prog.advance(t, n)
