"""Subprocess runs for benchmarks: a command that fails is an error, never a timing.

A benchmark that times a command in a new process runs it through :func:`run_checked`: a non-zero
exit status (a refused output folder, bad input, a crash) stops the benchmark at once with the
command, its exit status and the end of its stderr, so a refused run can never be reported as a
fast one. Import it as ``from checked import run_checked`` (benchmarks run as scripts from the
repository root, with ``benchmarks/`` on ``sys.path``).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence


class BenchmarkCommandFailed(SystemExit):
    """A timed command exited non-zero: its time is not a measurement."""


def run_checked(cmd: Sequence[str], *, what: str | None = None, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True, **kwargs)``; raises :class:`BenchmarkCommandFailed`
    (after printing the command's stderr tail) when it exits non-zero."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    p = subprocess.run(list(cmd), **kwargs)
    if p.returncode != 0:
        name = what or " ".join(str(c) for c in cmd)
        tail = (p.stderr or "").strip()[-1500:] if isinstance(p.stderr, str) else ""
        msg = f"benchmark: FAILED: {name} exited {p.returncode}; its time is not a measurement\n{tail}"
        print(msg, file=sys.stderr, flush=True)
        raise BenchmarkCommandFailed(msg)
    return p
