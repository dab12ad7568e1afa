"""Options and helpers shared by the CLI commands."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from typer.core import TyperGroup

from invdesign.errors import InvdesignError

if TYPE_CHECKING:  # annotations only: heavy imports stay inside the commands (fast --help)
    from invdesign.lattice.host import HostLattice

HOST_HELP = "Host: a pristine unit-cell CIF, a host config TOML, or builtin:MoS2 (default)."
SUPERCELL_HELP = "Supercell of the host, e.g. 8x8 (default) or 8x8x1."

HostOpt = typer.Option("builtin:MoS2", "--host", help=HOST_HELP)
SupercellOpt = typer.Option("8x8", "--supercell", help=SUPERCELL_HELP)
TolOpt = typer.Option(0.7, "--tol", help="Largest atom-to-site distance (Angstrom) when mapping structures.")


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


def resolve_host(host: str, supercell: str) -> HostLattice:
    """Host lattice from ``--host``/``--supercell`` (the packaged MoS2 8x8 is shared)."""
    from invdesign.lattice.host import HostLattice
    if host == "builtin:MoS2" and supercell in ("8x8", "8x8x1"):
        return HostLattice.default()
    if host.endswith(".toml"):
        return HostLattice.from_config(host)
    return HostLattice.from_unit_cell(host, supercell)


OverwriteOpt = typer.Option(
    False, "--overwrite",
    help="Replace an existing output: a file, or a folder holding a previous output of this command "
         "(only the files listed in its manifest are replaced; a folder holding other files is always refused).")


def check_out_file(out: Path, suffixes: tuple[str, ...] = (".csv",), overwrite: bool = False) -> Path:
    """Validate an output file path before any work is done (policy: :mod:`invdesign.outputs`)."""
    from invdesign.outputs import check_file

    return check_file(out, suffixes, overwrite)


def check_out_dir(out: Path, command: str, overwrite: bool = False) -> Path:
    """Validate an output folder of ``command`` before any work is done (policy: :mod:`invdesign.outputs`)."""
    from invdesign.outputs import check_dir

    return check_dir(out, command, overwrite)


def check_inputs(paths) -> None:
    """Every path in ``paths`` exists (one line naming the first that does not), before any model loads."""
    for p in paths or []:
        if not Path(p).exists():
            raise InvdesignError("no such file or folder", source=str(p))
