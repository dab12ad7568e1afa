"""Configurations: a site occupancy on a host lattice, and the map to and from structures.

A configuration is a read-only ``(n_sites,)`` uint8 array of species codes (``0`` = vacancy,
see :attr:`HostLattice.species`). Batches are ``(N, n_sites)`` uint8 arrays; no Structure
objects on hot paths. :class:`Configuration` wraps one array with its host for the API edges.

Mapping atoms to sites works for any supercell matrix: each atom is expressed in unit-cell
coordinates, matched to the nearest basis atom (Cartesian distance), and its cell translation
is reduced into the supercell; atoms further than ``tol`` Angstrom from every site are an error.

A 2D layer is the same material whatever the vacuum above it and wherever it sits along c: a
structure's cell must match the host's in plane (a, b and the three angles), its height c may differ,
and its atoms are moved rigidly along the layer normal onto the host's atomic planes
(:meth:`SiteMapper.host_frac`) before they are matched. The 2DMD release's high-density files
(c = 20 A) thus map onto the same host as its low-density ones (c ~ 15 A).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from pymatgen.core import Lattice, Structure

from invdesign.errors import InvdesignError
from invdesign.lattice.host import VACANCY, HostLattice

DEFAULT_TOL = 0.7  # Angstrom; nearest distinct MoS2 sites are 2.41 A apart
CELL_RTOL = 0.02  # relative tolerance on cell lengths
CELL_ATOL_DEG = 1.0  # tolerance on cell angles, degrees


@dataclass(frozen=True, eq=False)
class Configuration:
    """One defect configuration: ``occ[i]`` is the species code on host site ``i``."""

    occ: np.ndarray
    host: HostLattice

    def __post_init__(self) -> None:
        occ = np.asarray(self.occ, dtype=np.uint8)
        if occ.shape != (self.host.n_sites,):
            raise InvdesignError(f"occupancy has shape {occ.shape}, host has {self.host.n_sites} sites")
        bad = ~self.host.allowed[self.host.sublattice, occ]
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InvdesignError(
                f"species {self.host.species[occ[i]]} not allowed on site {i} "
                f"({self.host.sublattices[self.host.sublattice[i]]} sublattice)"
            )
        occ = occ.copy()
        occ.setflags(write=False)
        object.__setattr__(self, "occ", occ)

    @classmethod
    def from_structure(cls, structure, host: HostLattice | None = None, tol: float = DEFAULT_TOL,
                       source: str = "<structure>") -> Configuration:
        """Map a pymatgen ``Structure`` or an ASE ``Atoms`` onto ``host`` (default: 8x8 MoS2)."""
        host = host or HostLattice.default()
        st = as_structure(structure)
        if st is None:
            raise InvdesignError(f"not a pymatgen Structure or an ASE Atoms: {type(structure).__name__}", source=source)
        return cls(structure_to_config(st, host, source=source, tol=tol), host)

    @classmethod
    def from_defects(cls, host: HostLattice, defects: dict[int, str] | list[tuple[int, str]]) -> Configuration:
        """Build from ``{site: species}`` (species ``"Vac"`` for a vacancy)."""
        occ = host.host_code.copy()
        items = defects.items() if isinstance(defects, dict) else defects
        for site, sp in items:
            if sp not in host.species_code:
                raise InvdesignError(f"unknown species {sp!r}; host allows {host.species}")
            occ[int(site)] = host.species_code[sp]
        return cls(occ, host)

    @cached_property
    def defect_sites(self) -> np.ndarray:
        """``(k,)`` sites whose species differs from the host."""
        return np.flatnonzero(self.occ != self.host.host_code)

    @property
    def n_defects(self) -> int:
        return int(len(self.defect_sites))

    @property
    def defects(self) -> list[tuple[int, str]]:
        """``[(site, species), ...]`` of the defects, species ``"Vac"`` for vacancies."""
        return [(int(i), self.host.species[self.occ[i]]) for i in self.defect_sites]

    @property
    def key(self) -> str:
        """Canonical key: equal iff symmetry-equivalent (see :mod:`invdesign.lattice.canonical`)."""
        from invdesign.lattice.canonical import canonical_keys

        return canonical_keys(self.occ[None], self.host)[0]

    def to_structure(self) -> Structure:
        return config_to_structure(self.occ, self.host)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Configuration) and other.host is self.host and np.array_equal(self.occ, other.occ)

    def __hash__(self) -> int:
        return hash(self.occ.tobytes())

    def __repr__(self) -> str:
        d = ", ".join(f"{sp}@{s}" for s, sp in self.defects) or "pristine"
        return f"Configuration({self.host.name}: {d})"


def config_to_structure(occ: np.ndarray, host: HostLattice) -> Structure:
    """pymatgen Structure of one configuration: host sites in order, vacancies left out."""
    occ = np.asarray(occ)
    keep = occ != 0
    species = [host.species[c] for c in occ[keep]]
    return Structure(host.lattice, species, host.frac_coords[keep], coords_are_cartesian=False)


def _other_host(lattice: np.ndarray, host: HostLattice) -> str:
    """``"; ..."`` naming the one packaged host whose 2DMD release cell ``lattice`` has, when that is not
    ``host``'s: a folder mixing hosts is refused saying so (one host per run), else ``""``."""
    from invdesign.lattice.hosts import candidates

    try:
        found = [(s, sc) for s, sc in candidates(lattice, set()) if sc == s.supercell]  # release cells only
    except Exception:  # noqa: BLE001 (a degenerate cell: the plain message stands)
        return ""
    if len(found) != 1 or found[0][0].name == (host.unit_cell.composition.reduced_formula if host.unit_cell else ""):
        return ""
    s, (na, nb) = found[0]
    return (f"; it has the cell of {na}x{nb} {s.name}: one host per run ({host.name} here, from --host or the first "
            f"structure), so run each host's structures separately")


class SiteMapper:
    """Vectorised atom -> host-site assignment for one host (any supercell matrix)."""

    def __init__(self, host: HostLattice) -> None:
        self.host = host
        uc = host.unit_cell
        self.uc_matrix = uc.lattice.matrix
        self.basis = np.mod(uc.frac_coords, 1.0)  # (B, 3)
        self.M = host.matrix.astype(float)
        self.Minv = np.linalg.inv(self.M)
        # Every host site as (basis index, reduced integer cell translation).
        f_uc = host.frac_coords @ self.M  # (n, 3) in unit-cell coordinates
        d = f_uc[:, None, :] - self.basis[None, :, :]
        b = np.argmin(np.linalg.norm((d - np.round(d)) @ self.uc_matrix, axis=-1), axis=1)
        t = np.round(f_uc - self.basis[b]).astype(np.int64)
        keys = self._keys(b, self._reduce(t))
        order = np.argsort(keys)
        self.sorted_keys = keys[order]
        self.sorted_sites = order
        if len(np.unique(keys)) != host.n_sites:
            raise InvdesignError("host sites do not reduce to distinct (basis, cell) pairs")
        self.sc_lattice = host.lattice
        self._ref_abc, self._ref_ang = _abc_angles(self.sc_lattice.matrix)

    def _reduce(self, t: np.ndarray) -> np.ndarray:
        """Reduce integer translations ``(m, 3)`` into the supercell's fundamental domain."""
        s = t @ self.Minv
        return np.round(t - np.floor(s + 1e-9) @ self.M).astype(np.int64)

    @staticmethod
    def _keys(b: np.ndarray, t: np.ndarray) -> np.ndarray:
        off = 1 << 12
        return ((b.astype(np.int64) * (1 << 14) + t[:, 0] + off) * (1 << 14) + t[:, 1] + off) * (1 << 14) + t[:, 2] + off

    @cached_property
    def _planes(self) -> np.ndarray:
        """``(P,)`` distinct heights (A, along the layer normal) of the host's atomic planes."""
        z = self.host.cart_coords @ self._normal
        return np.unique(np.round(z, 2))

    @cached_property
    def _normal(self) -> np.ndarray:
        a, b, _ = self.sc_lattice.matrix
        n = np.cross(a, b)
        return n / np.linalg.norm(n)

    def check_cell(self, lattice: Lattice | np.ndarray, source: str) -> None:
        """Refuse a cell that differs from the host's in plane (a, b, angles) or is too thin for its layer."""
        m = lattice.matrix if isinstance(lattice, Lattice) else np.asarray(lattice, dtype=float)
        abc, ang = _abc_angles(m)
        ref_abc, ref_ang = self._ref_abc, self._ref_ang
        height = abs(float(np.dot(m[2], np.cross(m[0], m[1]))) / max(np.linalg.norm(np.cross(m[0], m[1])), 1e-12))
        thick = float(self._planes[-1] - self._planes[0]) if len(self._planes) else 0.0
        ok = (np.all(np.isfinite(m)) and np.all(np.abs(abc[:2] - ref_abc[:2]) <= CELL_RTOL * ref_abc[:2])
              and np.all(np.abs(ang - ref_ang) <= CELL_ATOL_DEG) and height > thick + 2 * DEFAULT_TOL)
        if not ok:
            lat, ref = Lattice(m), self.sc_lattice
            a, b, c = lat.abc
            ra, rb, rc = ref.abc
            raise InvdesignError(
                f"wrong cell: a,b,c = {a:.3f},{b:.3f},{c:.3f} A, gamma = {lat.angles[2]:.1f} deg; "
                f"host {self.host.name} has {ra:.3f},{rb:.3f},{rc:.3f} A, gamma = {ref.angles[2]:.1f} deg"
                + _other_host(m, self.host), source=source,
            )

    def host_frac(self, lattice: Lattice | np.ndarray, frac: np.ndarray, source: str = "<structure>") -> np.ndarray:
        """Fractional coordinates ``(m, 3)`` of atoms at ``frac`` in ``lattice``, re-expressed in the host cell
        after a rigid shift along the layer normal that puts the atoms on the host's atomic planes.

        The cell is checked first (:meth:`check_cell`: same in-plane cell, any height). The shift is the one
        that brings most atoms within 0.3 A of a host plane (a vote over atom-plane offsets; the layer is
        first made contiguous across the cell's boundary), refined to the median residual of those atoms.
        A structure already in the host's frame gets a shift of zero to round-off.
        """
        m = lattice.matrix if isinstance(lattice, Lattice) else np.asarray(lattice, dtype=float)
        self.check_cell(m, source)
        frac = np.asarray(frac, dtype=float).reshape(-1, 3)
        if not np.isfinite(frac).all():
            raise InvdesignError("non-finite atomic coordinates", source=source)
        if len(frac) == 0:
            return frac
        height = float(np.dot(m[2], self._normal))
        cart = frac @ m
        zn = cart @ self._normal
        z = np.mod(zn, height)
        # make the layer contiguous: start the periodic column in the middle of its largest empty gap
        zs = np.sort(z)
        gaps = np.diff(np.concatenate([zs, zs[:1] + height]))
        g = int(np.argmax(gaps))
        cut = zs[g] + gaps[g] / 2
        zu = np.mod(z - cut, height) + cut
        planes = self._planes
        cand = np.unique(np.round((np.unique(np.round(zu, 1))[:, None] - planes[None, :]).ravel(), 2))
        resid = zu[None, :, None] - cand[:, None, None] - planes[None, None, :]  # (K, m, P)
        near = np.abs(resid).min(axis=2)
        best = int(np.argmax((near < 0.3).sum(axis=1)))
        on = near[best] < 0.3
        r = resid[best][np.arange(len(zu)), np.argmin(np.abs(resid[best]), axis=1)]
        shift = cand[best] + float(np.median(r[on]))
        cart = cart + ((zu - shift) - zn)[:, None] * self._normal[None, :]  # rigid move along the normal
        return cart @ np.linalg.inv(self.sc_lattice.matrix)

    def map_atoms(
        self,
        species: list[str] | np.ndarray,
        frac: np.ndarray,
        source: str = "<structure>",
        tol: float = DEFAULT_TOL,
    ) -> np.ndarray:
        """Return the ``(n_sites,)`` uint8 occupancy of atoms ``species`` at ``frac`` ``(m, 3)``.

        Raises :class:`InvdesignError` naming ``source``, the atom and the reason when an atom is
        more than ``tol`` Angstrom from every host site, two atoms share a site, or a species is
        unknown or not allowed on its sublattice.
        """
        host = self.host
        frac = np.asarray(frac, dtype=float).reshape(-1, 3)
        f_uc = frac @ self.M
        d = f_uc[:, None, :] - self.basis[None, :, :]
        r = d - np.round(d)
        dist_all = np.linalg.norm(r @ self.uc_matrix, axis=-1)  # (m, B)
        b = np.argmin(dist_all, axis=1)
        dist = dist_all[np.arange(len(b)), b]
        far = dist > tol
        if far.any():
            i = int(np.flatnonzero(far)[0])
            raise InvdesignError(
                f"atom {i} ({species[i]}) is {dist[i]:.2f} A from the nearest host site (tolerance {tol} A)",
                source=source,
            )
        t = np.round(f_uc - self.basis[b]).astype(np.int64)
        keys = self._keys(b, self._reduce(t))
        pos = np.searchsorted(self.sorted_keys, keys)
        pos = np.minimum(pos, len(self.sorted_keys) - 1)
        if not np.array_equal(self.sorted_keys[pos], keys):
            raise InvdesignError("atoms do not reduce onto host sites", source=source)
        sites = self.sorted_sites[pos]
        per_site = np.bincount(sites, minlength=host.n_sites)
        if per_site.max(initial=0) > 1:
            s = int(np.flatnonzero(per_site > 1)[0])
            atoms = np.flatnonzero(sites == s)[:2].tolist()
            raise InvdesignError(f"atoms {atoms[0]} and {atoms[1]} both map to host site {s}", source=source)
        code = host.species_code
        try:
            codes = np.array([code[str(sp)] for sp in species], dtype=np.uint8)
        except KeyError:
            unknown = next(str(sp) for sp in species if str(sp) not in code)
            raise InvdesignError(
                f"unknown species {unknown} (host {host.name} allows {', '.join(host.species[1:])})", source=source
            ) from None
        ok = host.allowed[host.sublattice[sites], codes]
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise InvdesignError(
                f"atom {i} ({species[i]}) sits on a {host.sublattices[host.sublattice[sites[i]]]} site, "
                f"where {host.name} allows {', '.join(s for s, a in zip(host.species, host.allowed[host.sublattice[sites[i]]]) if a and s != VACANCY)}",
                source=source,
            )
        occ = np.zeros(host.n_sites, dtype=np.uint8)
        occ[sites] = codes
        return occ


def _abc_angles(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lengths (A) and angles alpha, beta, gamma (deg) of lattice rows ``m`` ``(3, 3)``."""
    abc = np.sqrt((m * m).sum(axis=1))
    cos = np.array([m[1] @ m[2] / (abc[1] * abc[2]), m[0] @ m[2] / (abc[0] * abc[2]), m[0] @ m[1] / (abc[0] * abc[1])])
    return abc, np.degrees(np.arccos(np.clip(cos, -1, 1)))


def as_structure(obj) -> Structure | None:
    """``obj`` as a pymatgen Structure: a Structure itself, an ASE ``Atoms`` converted by pymatgen's
    ``AseAtomsAdaptor`` (ASE is optional: an ``Atoms`` exists only where it is installed), else None."""
    if isinstance(obj, Structure):
        return obj
    import sys

    ase = sys.modules.get("ase")  # imported already wherever an Atoms was made
    if ase is not None and isinstance(obj, getattr(ase, "Atoms", ())):
        from pymatgen.io.ase import AseAtomsAdaptor

        return AseAtomsAdaptor.get_structure(obj)
    return None


def structure_to_config(
    structure: Structure, host: HostLattice, source: str = "<structure>", tol: float = DEFAULT_TOL
) -> np.ndarray:
    """Map a pymatgen Structure onto ``host``; returns the ``(n_sites,)`` uint8 occupancy."""
    mapper = get_mapper(host)
    if not structure.is_ordered:
        raise InvdesignError("structure has partial occupancies; configurations need whole atoms", source=source)
    species = [s.specie.symbol for s in structure]
    frac = mapper.host_frac(structure.lattice, structure.frac_coords, source)
    return mapper.map_atoms(species, frac, source=source, tol=tol)


def get_mapper(host: HostLattice) -> SiteMapper:
    """The host's cached :class:`SiteMapper`."""
    if host._cache.get("mapper") is None:
        host._cache["mapper"] = SiteMapper(host)
    return host._cache["mapper"]
