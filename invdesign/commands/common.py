"""Options and helpers shared by the CLI commands."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from invdesign.errors import InvdesignError

if TYPE_CHECKING:  # annotations only: heavy imports stay inside the commands (fast --help)
    from invdesign.lattice.host import HostLattice

HOST_HELP = "Host: a pristine unit-cell CIF, a host config TOML, or builtin:MoS2 (default)."
SUPERCELL_HELP = "Supercell of the host, e.g. 8x8 (default) or 8x8x1."

HostOpt = typer.Option("builtin:MoS2", "--host", help=HOST_HELP)
SupercellOpt = typer.Option("8x8", "--supercell", help=SUPERCELL_HELP)
TolOpt = typer.Option(0.7, "--tol", help="Largest atom-to-site distance (Angstrom) when mapping structures.")


def resolve_host(host: str, supercell: str) -> HostLattice:
    """Host lattice from ``--host``/``--supercell`` (the packaged MoS2 8x8 is shared)."""
    from invdesign.lattice.host import HostLattice
    if host == "builtin:MoS2" and supercell in ("8x8", "8x8x1"):
        return HostLattice.default()
    if host.endswith(".toml"):
        return HostLattice.from_config(host)
    return HostLattice.from_unit_cell(host, supercell)


def check_out_file(out: Path, suffixes: tuple[str, ...] = (".csv",)) -> Path:
    """Validate an output file path before any work is done."""
    if out.suffix not in suffixes:
        raise InvdesignError(f"output must end in {' or '.join(suffixes)}", source=str(out))
    if out.exists() and out.is_dir():
        raise InvdesignError("output is a folder, not a file", source=str(out))
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InvdesignError("output folder does not exist", source=str(parent))
    return out


def check_out_dir(out: Path) -> Path:
    """Validate an output folder path (created or replaced later) before any work is done."""
    if out.exists() and not out.is_dir():
        raise InvdesignError("output exists and is not a folder", source=str(out))
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InvdesignError("output folder's parent does not exist", source=str(parent))
    return out
