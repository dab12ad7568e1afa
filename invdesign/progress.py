"""Progress for anything that may take over a second: rich bars on a terminal, plain lines elsewhere.

On a terminal (stderr is a tty, or ``INVDESIGN_PROGRESS=1``) a rich progress bar is drawn on
stderr. Elsewhere (pipes, CI logs, batch jobs) a line is written to stderr every
``INVDESIGN_PROGRESS_INTERVAL`` seconds (default 5) while a task runs, e.g.
``invdesign: training encoder: 120/400 (30%), 42 s``, so a long run is never silent.
``INVDESIGN_PROGRESS=0`` turns both off (the tests do).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


def mode() -> str:
    """``"bar"`` (rich, a terminal), ``"lines"`` (a line every few seconds) or ``"off"``."""
    flag = os.environ.get("INVDESIGN_PROGRESS")
    if flag is not None:
        if flag in ("0", "", "false", "no"):
            return "off"
        return "lines" if flag == "lines" else "bar"
    return "bar" if sys.stderr.isatty() else "lines"


def enabled() -> bool:
    """Whether any progress is reported (bar or lines)."""
    return mode() != "off"


def _interval() -> float:
    try:
        return max(0.05, float(os.environ.get("INVDESIGN_PROGRESS_INTERVAL", "5")))
    except ValueError:
        return 5.0


class LineProgress:
    """The subset of ``rich.progress.Progress`` the package uses, writing plain lines to stderr.

    A background thread writes one line per running task every :func:`_interval` seconds; a
    task that ends after at least one such line writes a last one with its elapsed time (shorter
    tasks stay silent).
    """

    def __init__(self) -> None:
        self._tasks: dict[int, dict] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LineProgress:
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        with self._lock:
            for t in self._tasks.values():
                if t.get("said"):  # a task shorter than one interval stays silent
                    self._line(t, final=True)

    def add_task(self, description: str, total: float | None = None, completed: float = 0) -> int:
        with self._lock:
            tid = len(self._tasks)
            self._tasks[tid] = {"description": description, "total": total, "completed": completed, "start": time.time()}
            return tid

    def update(self, task_id: int, completed: float | None = None, total: float | None = None, advance: float = 0,
               **_: object) -> None:
        with self._lock:
            t = self._tasks[task_id]
            if total is not None:
                t["total"] = total
            if completed is not None:
                t["completed"] = completed
            t["completed"] += advance

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def _line(self, t: dict, final: bool = False) -> None:
        el = time.time() - t["start"]
        done, total = t["completed"], t["total"]
        if total:
            pos = f"{done:g}/{total:g} ({100 * done / total:.0f}%)"
        else:
            pos = f"{done:g} done" if done else "running"
        state = "done" if final else pos
        if final and total:
            state = f"done {done:g}/{total:g}"
        print(f"invdesign: {t['description']}: {state}, {el:.0f} s", file=sys.stderr, flush=True)

    def _beat(self) -> None:
        while not self._stop.wait(_interval()):
            with self._lock:
                for t in self._tasks.values():
                    self._line(t)
                    t["said"] = True


def _progress():
    """A progress display for the current mode (rich ``Progress``, :class:`LineProgress`, or a disabled rich one)."""
    if mode() == "lines":
        return LineProgress()
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
    """Iterate ``items`` with progress labelled ``description``."""
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
