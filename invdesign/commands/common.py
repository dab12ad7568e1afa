"""Options and helpers shared by the CLI commands."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from typer.core import TyperGroup

from invdesign.errors import InvdesignError
from invdesign.predict.placement import (  # noqa: F401  (the commands' host handling, shared with invdesign.api)
    place_model,
    recognised_host,
    requested_host,
    resolve_host,
)

HOST_HELP = ("Host: a packaged host (MoS2, WSe2, BN, GaSe, InSe, P), a pristine unit-cell CIF or a host config TOML; "
             "default: recognised from the structures (their elements and in-plane cell), else 8x8 MoS2.")
SUPERCELL_HELP = "Supercell of the host, e.g. 8x8 (default: the host's 2DMD cell, or the structures' own) or 8x8x1."

HostOpt = typer.Option(None, "--host", help=HOST_HELP)
SupercellOpt = typer.Option(None, "--supercell", help=SUPERCELL_HELP)
def _check_tol(value: float) -> float:
    import math

    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"must be a finite positive distance in Angstrom, not {value}")
    return value


TolOpt = typer.Option(0.7, "--tol", callback=_check_tol,
                      help="Largest atom-to-site distance (Angstrom) when mapping structures.")


class PlainHelpGroup(TyperGroup):
    """The ``invdesign`` command group, for plain (click) help: a group called without a command
    (``invdesign``, ``invdesign campaign``) prints its help on stdout and exits 2, as typer's rich
    help did, instead of ending in a usage error whose message is the whole help text."""

    def main(self, *args, **kwargs):
        try:
            return super().main(*args, **kwargs)
        except typer.TyperException as exc:
            if type(exc).__name__ != "NoArgsIsHelpError":  # typer's own test (its class is not public)
                raise
            typer.echo(exc.format_message())
            raise typer.Exit(2) from None


class LazyConsole:
    """A ``rich.console.Console`` made (and rich imported) on first use, so ``--help`` and
    ``--version`` never import rich's console. ``LazyConsole(stderr=True)`` for stderr."""

    def __init__(self, **kwargs) -> None:
        self._kwargs = kwargs
        self._console = None

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._kwargs)
        return getattr(self._console, name)


THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
ThreadsOpt = typer.Option(
    1, "--threads", min=1, max=1024,
    help="Threads per oracle calculation (CHGNet's torch, xTB's OpenMP/BLAS) in each worker; default 1: a pool of one "
         "worker per core, each on one thread, keeps the cores busy without contention (with an inline executor, give "
         "the number of cores). Dask workers keep the thread settings they were started with.")


@contextmanager
def oracle_threads(n: int, oracle=None) -> Iterator[None]:
    """Run the oracle calculations of the block on ``n`` threads each: the thread variables of the environment (what
    the spawned pool workers import torch with), torch's own count in this process (inline and thread executors),
    and an xTB oracle's ``threads``; the environment and torch's count are restored at the end."""
    import os
    import sys

    if oracle is not None and hasattr(oracle, "threads"):  # xTB: OpenMP/BLAS threads of each xtb process
        oracle.threads = int(n)
    old = {k: os.environ.get(k) for k in THREAD_ENV}
    os.environ.update({k: str(int(n)) for k in THREAD_ENV})
    torch = sys.modules.get("torch")  # imported later in the block, torch reads OMP_NUM_THREADS itself
    before = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if before is not None:
            torch.set_num_threads(before)


def print_table(console, table) -> None:
    """Print a rich ``table`` on ``console``: as rich lays it out on a terminal; when stdout is not a terminal (piped,
    redirected), with every cell in full on one line (no truncation with "…", no wrapping at 80 columns), so ids and
    keys survive ``| grep``, ``> file`` and copy-paste."""
    if console.is_terminal:
        console.print(table)
        return
    from rich.console import Console

    for col in table.columns:
        col.no_wrap = True
    wide = Console(file=console.file, width=100_000, color_system=None, force_terminal=False)
    width = wide.measure(table).maximum
    Console(file=console.file, width=max(width, 20), color_system=None, force_terminal=False).print(table)


ModelHostOpt = typer.Option(
    None, "--host", help="Host of the structures: a pristine unit-cell CIF, a host config TOML, or builtin:MoS2; "
                         "default: the model's own (8x8 MoS2 for the packaged model).")
ModelSupercellOpt = typer.Option(
    None, "--supercell", help="Supercell of the host, e.g. 12x12 (default: the model's). A model trained on 8x8 serves "
                              "larger cells of its host by local geometry; every such prediction is flagged as extrapolation.")


OverwriteOpt = typer.Option(
    False, "--overwrite",
    help="Replace an existing output: a file, or a folder holding a previous output of this command "
         "(only the files listed in its manifest are replaced; a folder holding other files is always refused).")


FullPrecisionOpt = typer.Option(
    False, "--full-precision",
    help="Write every float of the CSV output at full precision (its repr) instead of rounded to its unit: eV to 4 "
         "decimals, meV to 1, probabilities to 3 (docs/outputs.md, Rounding); console tables show the same.")


def check_out_file(out: Path, suffixes: tuple[str, ...] = (".csv",), overwrite: bool = False) -> Path:
    """Validate an output file path before any work is done (policy: :mod:`invdesign.outputs`)."""
    from invdesign.outputs import check_file

    return check_file(out, suffixes, overwrite)


def check_out_dir(out: Path, command: str, overwrite: bool = False) -> Path:
    """Validate an output folder of ``command`` before any work is done (policy: :mod:`invdesign.outputs`)."""
    from invdesign.outputs import check_dir

    return check_dir(out, command, overwrite)


MAX_SEED = 2**63 - 1


def check_seed(seed: int, name: str = "--seed") -> int:
    """A seed every generator takes (numpy, torch): ``0 <= seed < 2**63``."""
    from invdesign.limits import check_number

    return check_number(name, seed, 0, MAX_SEED, integer=True)


def check_inputs(paths) -> None:
    """Every path in ``paths`` exists (one line naming the first that does not), before any model loads."""
    for p in paths or []:
        if not Path(p).exists():
            raise InvdesignError("no such file or folder", source=str(p))
