"""The packaged hosts (the six of the 2DMD release), by name, and recognising a structure's host.

A host is data: a pristine unit cell (``invdesign/resources/<NAME>_unit_cell.cif``), the supercell
of the release and the substitutions it allows (:data:`invdesign.lattice.host.DEFAULT_SUBSTITUENTS`).
Their symmetry tables are packaged too (``symmetry_<fingerprint>_<symprec>.npz``), so no spglib run
is needed for them.

:func:`recognise` tells the host of a parsed structure from the structure alone: the packaged host
whose elements contain the structure's and whose in-plane cell (a, b, gamma; the height c is free,
see :class:`invdesign.lattice.config.SiteMapper`) is an integer multiple of the unit cell's. Any
n x m supercell of a packaged unit cell is recognised (8x8 MoS2, 12x12 MoS2, 6x6 GaSe, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from invdesign.errors import InvdesignError
from invdesign.lattice.host import HostLattice, load_unit_cell


@dataclass(frozen=True)
class HostSpec:
    """A packaged host: ``name`` (the unit cell's reduced formula), its release supercell and aliases."""

    name: str
    supercell: tuple[int, int]
    label: str
    spin_polarised: bool
    aliases: tuple[str, ...] = ()


#: The six hosts of the 2DMD release (Huang et al., npj 2D Mater. Appl. 7, 6 (2023)).
PACKAGED: tuple[HostSpec, ...] = (
    HostSpec("MoS2", (8, 8), "MoS2", False, ("mos2",)),
    HostSpec("WSe2", (8, 8), "WSe2", False, ("wse2",)),
    HostSpec("BN", (8, 8), "h-BN", True, ("hbn", "h-bn", "bn")),
    HostSpec("GaSe", (6, 6), "GaSe", True, ("gase",)),
    HostSpec("InSe", (6, 6), "InSe", True, ("inse",)),
    HostSpec("P", (6, 6), "black P", True, ("bp", "black-p", "phosphorus", "p")),
)

_CELL_RTOL = 0.02  # relative tolerance on a, b (as SiteMapper's CELL_RTOL)
_ANGLE_TOL = 1.0  # degrees


def spec(name: str) -> HostSpec:
    """The packaged host called ``name`` (case-insensitive; aliases such as ``hBN``, ``BP``)."""
    key = name.removeprefix("builtin:").strip().lower()
    for s in PACKAGED:
        if key == s.name.lower() or key in s.aliases:
            return s
    raise InvdesignError(f"unknown host {name!r}; packaged hosts: {', '.join(s.name for s in PACKAGED)}")


def packaged_host(name: str, supercell: tuple[int, int] | None = None) -> HostLattice:
    """The packaged host ``name`` in its release supercell (or ``supercell``)."""
    if name.removeprefix("builtin:").lower() == "mos2" and supercell in (None, (8, 8)):
        return HostLattice.default()
    s = spec(name)
    return HostLattice.from_unit_cell(f"builtin:{s.name}", supercell or s.supercell)


def host_spec_of(host: HostLattice) -> HostSpec | None:
    """The packaged spec whose unit cell ``host`` is built on (None for a user's own host)."""
    formula = host.unit_cell.composition.reduced_formula
    for s in PACKAGED:
        if s.name == formula:
            if np.allclose(_unit_cell_facts(s.name)[2], host.unit_cell.lattice.abc[:2], rtol=1e-4):
                return s
    return None


@cache
def _unit_cell_facts(name: str) -> tuple[frozenset[str], tuple[float, float, float], tuple[float, float]]:
    """(allowed elements, in-plane a, b, gamma of the unit cell, (a, b)) of a packaged host, read once."""
    from invdesign.lattice.host import DEFAULT_SUBSTITUENTS, VACANCY

    uc = load_unit_cell(f"builtin:{name}")
    allowed = {e.symbol for e in uc.composition.elements}
    for subs in DEFAULT_SUBSTITUENTS[name].values():
        allowed |= {x for x in subs if x != VACANCY}
    return frozenset(allowed), _inplane(uc.lattice.matrix), tuple(uc.lattice.abc[:2])


def _inplane(lattice: np.ndarray) -> tuple[float, float, float]:
    m = np.asarray(lattice, dtype=float)
    a, b = np.linalg.norm(m[0]), np.linalg.norm(m[1])
    gamma = float(np.degrees(np.arccos(np.clip(m[0] @ m[1] / (a * b), -1, 1))))
    return float(a), float(b), gamma


def candidates(lattice: np.ndarray, elements: set[str]) -> list[tuple[HostSpec, tuple[int, int]]]:
    """Packaged hosts (and supercells) whose in-plane cell matches ``lattice`` ``(3, 3)`` and whose species
    (host elements and substituents) include every element of ``elements``."""
    a, b, gamma = _inplane(lattice)
    out = []
    for s in PACKAGED:
        allowed, (ua, ub, ug), _ = _unit_cell_facts(s.name)
        if not elements <= allowed:
            continue
        na, nb = round(a / ua), round(b / ub)
        if na < 1 or nb < 1 or abs(gamma - ug) > _ANGLE_TOL:
            continue
        if abs(a - na * ua) <= _CELL_RTOL * na * ua and abs(b - nb * ub) <= _CELL_RTOL * nb * ub:
            out.append((s, (na, nb)))
    return out


def recognise(lattice: np.ndarray, species: list[str], source: str = "<structure>") -> HostLattice:
    """The packaged host of a structure with cell ``lattice`` ``(3, 3)`` (rows, A) and atoms ``species``.

    Raises :class:`InvdesignError` naming ``source`` when no packaged host fits (give ``--host``) or when
    more than one does.
    """
    elements = {str(x) for x in species}
    found = candidates(lattice, elements)
    if not found:
        a, b, gamma = _inplane(lattice)
        raise InvdesignError(
            f"no packaged host has elements {', '.join(sorted(elements))} on a {a:.3f} x {b:.3f} A cell "
            f"(gamma {gamma:.1f} deg); packaged: {', '.join(s.name for s in PACKAGED)}; give --host CIF for another",
            source=source)
    if len(found) > 1:
        raise InvdesignError(f"the structure fits several packaged hosts ({', '.join(s.name for s, _ in found)}); "
                             "give --host", source=source)
    s, sc = found[0]
    return packaged_host(s.name, sc)
