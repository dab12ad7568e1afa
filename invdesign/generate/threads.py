"""One torch thread for the small networks of a design run, without importing torch for it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

_depth = 0
_restore: list[int] = []  # thread counts to restore, one per open block (-1: torch was imported inside it)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread: these nets are small, and extra threads only contend for the cores.

    Where torch is not imported yet nothing is imported here: code that imports it inside the block calls
    :func:`torch_imported`, which sets the thread count then (and its default is restored at the end).
    """
    global _depth
    torch = sys.modules.get("torch")
    if torch is not None:
        _restore.append(torch.get_num_threads())
        torch.set_num_threads(1)
    else:
        _restore.append(-1)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        n = _restore.pop()
        torch = sys.modules.get("torch")
        if torch is not None and n > 0:
            torch.set_num_threads(n)
        elif torch is not None and _default is not None and _depth == 0:
            torch.set_num_threads(_default)


_default: int | None = None


def torch_imported() -> None:
    """Call after importing torch: inside :func:`one_thread` it then runs on one thread (its own default is
    restored when the outermost block ends)."""
    global _default
    torch = sys.modules.get("torch")
    if torch is None or _depth == 0:
        return
    if _default is None:
        _default = torch.get_num_threads()
    torch.set_num_threads(1)
