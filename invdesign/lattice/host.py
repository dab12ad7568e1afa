"""The host lattice: a pristine supercell, its site table, allowed species and symmetry.

A :class:`HostLattice` is built from any pristine unit cell (CIF path or pymatgen
``Structure``) and a supercell matrix. Sites are numbered in the order of pymatgen's
``make_supercell``; each carries a *sublattice* label (the host element on it) and a set of
allowed species (host element, substituents, vacancy). Species are small integer codes:
``0`` is always the vacancy ``"Vac"``; the rest index :attr:`HostLattice.species`.

The symmetry group of the supercell (lattice translations x point group) is computed with
spglib through pymatgen and stored as site permutations ``perms`` of shape ``(G, n_sites)``:
``perms[g, i]`` is the site that operation ``g`` sends site ``i`` to.
"""

from __future__ import annotations

import hashlib
import tomllib
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path

import numpy as np
from pymatgen.core import Lattice, Structure

from invdesign.errors import InvdesignError

VACANCY = "Vac"

# Substituents per host element when a config gives none: the species of the 2DMD release.
DEFAULT_SUBSTITUENTS: dict[str, dict[str, list[str]]] = {
    "MoS2": {"Mo": ["W", VACANCY], "S": ["Se", VACANCY]},
    "WSe2": {"W": ["Mo", VACANCY], "Se": ["S", VACANCY]},
    "hBN": {"B": ["C", VACANCY], "N": ["C", VACANCY]},
    "BN": {"B": ["C", VACANCY], "N": ["C", VACANCY]},
    "GaSe": {"Ga": ["In", VACANCY], "Se": ["S", VACANCY]},
    "InSe": {"In": ["Ga", VACANCY], "Se": ["S", VACANCY]},
    "P": {"P": ["N", VACANCY]},
}


def _as_matrix(supercell: int | tuple[int, ...] | list | np.ndarray | str) -> np.ndarray:
    """Return a 3x3 integer supercell matrix from ``8``, ``"8x8"``, ``(8, 8)``, ``(8,8,1)`` or a matrix."""
    if isinstance(supercell, str):
        try:
            parts = [int(p) for p in supercell.lower().split("x")]
        except ValueError:
            raise InvdesignError(f"supercell {supercell!r} is not of the form NxM or NxMxK") from None
        supercell = parts
    arr = np.asarray(supercell, dtype=int)
    if arr.ndim == 0:
        arr = np.array([int(arr), int(arr), 1])
    if arr.ndim == 1:
        if len(arr) == 2:
            arr = np.array([arr[0], arr[1], 1])
        if len(arr) != 3:
            raise InvdesignError(f"supercell {supercell!r} needs 2 or 3 integers")
        arr = np.diag(arr)
    if arr.shape != (3, 3) or round(abs(np.linalg.det(arr))) < 1:
        raise InvdesignError(f"supercell {supercell!r} is not a non-singular 3x3 integer matrix")
    return arr


def load_unit_cell(source: str | Path | Structure) -> Structure:
    """Read a pristine unit cell. ``"builtin:MoS2"`` is the packaged MoS2 cell."""
    if isinstance(source, Structure):
        return source
    text = str(source)
    if text.startswith("builtin:"):
        name = text.split(":", 1)[1]
        pre = resources.files("invdesign.resources") / f"{name}_unit_cell.json"
        if pre.is_file():  # the same cell, precomputed from the CIF (Structure.as_dict): no CIF parsing
            import json

            return Structure.from_dict(json.loads(pre.read_text()))
        ref = resources.files("invdesign.resources") / f"{name}_unit_cell.cif"
        if not ref.is_file():
            raise InvdesignError(f"no packaged unit cell {name!r}", source=text)
        with resources.as_file(ref) as path, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Structure.from_file(str(path))
    path = Path(text)
    if not path.is_file():
        raise InvdesignError("unit cell file not found", source=text)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Structure.from_file(str(path))
    except Exception as exc:  # pymatgen raises many types for unreadable files
        raise InvdesignError(f"cannot read unit cell ({type(exc).__name__}: {exc})", source=text) from None


@dataclass(frozen=True, eq=False)
class HostLattice:
    """A pristine host supercell with its sites, allowed species and symmetry.

    Attributes:
        unit_cell: the pristine primitive cell.
        matrix: ``(3, 3)`` int supercell matrix.
        substituents: host element -> non-host species allowed on its sites (``"Vac"`` included).
        symprec: spglib tolerance in Angstrom.
    """

    unit_cell: Structure
    matrix: np.ndarray
    substituents: dict[str, list[str]]
    symprec: float = 1e-3
    name: str = ""
    _cache: dict = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_unit_cell(
        cls,
        unit_cell: str | Path | Structure,
        supercell: int | tuple[int, ...] | str | np.ndarray = (8, 8),
        substituents: dict[str, list[str]] | None = None,
        symprec: float = 1e-3,
    ) -> HostLattice:
        """Build a host from a unit cell (path, ``builtin:NAME`` or Structure) and a supercell."""
        uc = load_unit_cell(unit_cell)
        matrix = _as_matrix(supercell)
        formula = uc.composition.reduced_formula
        if substituents is None:
            if formula not in DEFAULT_SUBSTITUENTS:
                raise InvdesignError(
                    f"no default substituents for host {formula}; give them in a config", source=str(unit_cell)
                )
            substituents = DEFAULT_SUBSTITUENTS[formula]
        host_elements = sorted({sp.symbol for sp in uc.species})
        missing = [el for el in substituents if el not in host_elements]
        if missing:
            raise InvdesignError(f"substituents name sublattices {missing} that the host {formula} does not have")
        subs = {el: list(substituents.get(el, [])) for el in host_elements}
        diag = np.diag(matrix)
        tag = "x".join(str(int(v)) for v in diag[:2]) if np.count_nonzero(matrix - np.diag(diag)) == 0 else "sc"
        host = cls(unit_cell=uc, matrix=matrix, substituents=subs, symprec=symprec, name=f"{formula}-{tag}")
        # Hosts are immutable: equal content gives the same object, so its symmetry is computed once
        # (a cached dataset of the default host reuses the default host's permutations).
        return _INTERNED.setdefault((host.fingerprint, symprec), host)

    @classmethod
    def from_config(cls, path: str | Path) -> HostLattice:
        """Build a host from a TOML config (``[host] unit_cell, supercell`` and ``[substituents]``)."""
        path = Path(path)
        try:
            cfg = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise InvdesignError(f"cannot read config ({exc})", source=str(path)) from None
        host = cfg.get("host", {})
        uc = host.get("unit_cell", "builtin:MoS2")
        if not str(uc).startswith("builtin:") and not Path(uc).is_absolute():
            uc = str(path.parent / uc)
        return cls.from_unit_cell(uc, host.get("supercell", [8, 8]), cfg.get("substituents"), host.get("symprec", 1e-3))

    @classmethod
    def default(cls) -> HostLattice:
        """The 8x8 MoS2 host of the 2DMD data (packaged unit cell; W/Vac on Mo, Se/Vac on S)."""
        return _default_host()

    # ------------------------------------------------------------------ site table
    @cached_property
    def supercell(self) -> Structure:
        """The pristine supercell as a pymatgen Structure (sites in host order)."""
        sc = self.unit_cell.copy()
        sc.make_supercell(self.matrix)
        return sc

    @property
    def lattice(self) -> Lattice:
        return self.supercell.lattice

    @cached_property
    def frac_coords(self) -> np.ndarray:
        """``(n_sites, 3)`` fractional coordinates of the host sites, wrapped into [0, 1)."""
        return np.mod(self.supercell.frac_coords, 1.0)

    @cached_property
    def cart_coords(self) -> np.ndarray:
        """``(n_sites, 3)`` Cartesian coordinates in Angstrom."""
        return self.lattice.get_cartesian_coords(self.frac_coords)

    @property
    def n_sites(self) -> int:
        return len(self.supercell)

    @cached_property
    def sublattices(self) -> list[str]:
        """Host elements in sorted order; the sublattice labels."""
        return sorted(self.substituents)

    @cached_property
    def sublattice(self) -> np.ndarray:
        """``(n_sites,)`` int sublattice index of every site (into :attr:`sublattices`)."""
        idx = {el: i for i, el in enumerate(self.sublattices)}
        return np.array([idx[s.specie.symbol] for s in self.supercell], dtype=np.int16)

    @cached_property
    def species(self) -> list[str]:
        """Species table: ``species[0] == "Vac"``, then host elements, then substituents."""
        out = [VACANCY] + list(self.sublattices)
        for el in self.sublattices:
            for sp in self.substituents[el]:
                if sp not in out:
                    out.append(sp)
        return out

    @cached_property
    def species_code(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.species)}

    @property
    def n_species(self) -> int:
        return len(self.species)

    @cached_property
    def host_code(self) -> np.ndarray:
        """``(n_sites,)`` uint8 species code of the pristine host on every site."""
        return np.array([self.species_code[s.specie.symbol] for s in self.supercell], dtype=np.uint8)

    @cached_property
    def allowed(self) -> np.ndarray:
        """``(n_sublattices, n_species)`` bool: species allowed on each sublattice (host included)."""
        table = np.zeros((len(self.sublattices), self.n_species), dtype=bool)
        for i, el in enumerate(self.sublattices):
            table[i, self.species_code[el]] = True
            for sp in self.substituents[el]:
                table[i, self.species_code[sp]] = True
        return table

    @cached_property
    def defect_types(self) -> list[tuple[int, int]]:
        """All (sublattice index, species code) defect types, e.g. V_Mo, W_Mo, V_S, Se_S."""
        return [
            (i, self.species_code[sp]) for i, el in enumerate(self.sublattices) for sp in self.substituents[el]
        ]

    def defect_label(self, sublattice: int, code: int) -> str:
        """Kroeger-Vink-like label: ``V_S``, ``W_Mo``, ``Se_S``."""
        sp = self.species[code]
        return f"{'V' if sp == VACANCY else sp}_{self.sublattices[sublattice]}"

    @cached_property
    def fingerprint(self) -> str:
        """Short content hash of the host (cell, supercell, species); keys caches and models."""
        h = hashlib.sha256()
        h.update(np.round(self.unit_cell.lattice.matrix, 6).tobytes())
        h.update(np.round(np.mod(self.unit_cell.frac_coords, 1.0), 6).tobytes())
        h.update(",".join(s.specie.symbol for s in self.unit_cell).encode())
        h.update(self.matrix.astype(np.int64).tobytes())
        h.update(repr(sorted((k, sorted(v)) for k, v in self.substituents.items())).encode())
        return h.hexdigest()[:16]

    # ------------------------------------------------------------------ symmetry
    @cached_property
    def perms(self) -> np.ndarray:
        """``(G, n_sites)`` int16 site permutations of the supercell's space group (spglib).

        Row 0 is the identity. For 8x8 MoS2 (P-6m2) ``G == 768`` (64 translations x 12).
        Hosts with a packaged table (``resources/symmetry_<fingerprint>.npz``, written by
        :func:`write_symmetry_table`) load it instead of running spglib.
        """
        pre = _packaged_symmetry(self)
        if pre is not None:
            return pre["perms"]
        cached = _read_user_symmetry(self, "perms")
        if cached is not None:
            return cached
        from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

        sga = SpacegroupAnalyzer(self.supercell, symprec=self.symprec)
        ops = sga.get_symmetry_operations(cartesian=False)
        frac = self.frac_coords
        lookup = _SiteLookup(frac)
        perms = []
        for op in ops:
            new = op.operate_multi(frac)
            perm = lookup.find(new)
            if perm is None:
                raise InvdesignError(f"symmetry operation does not map host sites onto sites (symprec={self.symprec})")
            if not np.array_equal(self.host_code[perm], self.host_code):
                raise InvdesignError("symmetry operation mixes species; host cell is inconsistent")
            perms.append(perm)
        arr = np.unique(np.array(perms, dtype=np.int16), axis=0)
        ident = np.arange(self.n_sites, dtype=np.int16)
        rest = arr[~np.all(arr == ident, axis=1)]
        out = np.vstack([ident[None], rest])
        out.setflags(write=False)
        _write_user_symmetry(self, "perms", out)
        return out

    @cached_property
    def spacegroup(self) -> str:
        from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

        sga = SpacegroupAnalyzer(self.supercell, symprec=self.symprec)
        return f"{sga.get_space_group_symbol()} ({sga.get_space_group_number()})"

    @property
    def n_ops(self) -> int:
        return int(self.perms.shape[0])

    @cached_property
    def site_orbits(self) -> np.ndarray:
        """``(n_sites,)`` orbit index of each site under the group (Wyckoff-like classes)."""
        return _orbit_labels(self.perms.astype(np.int64), self.n_sites)

    @cached_property
    def pair_orbits(self) -> np.ndarray:
        """``(n_sites, n_sites)`` int32 orbit index of every ordered site pair ``(i, j)``.

        Two ordered pairs share an index iff one group operation maps the first onto the second.
        Diagonal pairs (i, i) get their own orbits (site orbits).
        """
        pre = _packaged_symmetry(self)
        if pre is not None and "pair_orbits" in pre:
            return pre["pair_orbits"]
        cached = _read_user_symmetry(self, "pair_orbits")
        if cached is not None:
            return cached
        n = self.n_sites
        p = self.perms.astype(np.int64)
        # pair (i, j) -> i * n + j; image under g: p[g, i] * n + p[g, j]. The orbit representative is
        # the smallest image over the group, taken one operation at a time: O(n^2) memory, not O(G n^2)
        # (16x16 MoS2: 4.7 MB instead of ~7 GB).
        rep = np.arange(n * n, dtype=np.int64).reshape(n, n)
        for g in range(p.shape[0]):
            np.minimum(rep, p[g][:, None] * n + p[g][None, :], out=rep)
        _, labels = np.unique(rep.ravel(), return_inverse=True)
        out = labels.reshape(n, n).astype(np.int32)
        _write_user_symmetry(self, "pair_orbits", out)
        return out

    @cached_property
    def min_image_distance(self) -> np.ndarray:
        """``(n_sites, n_sites)`` minimum-image distances between host sites in Angstrom."""
        f = self.frac_coords
        d = f[:, None, :] - f[None, :, :]
        best = np.full(d.shape[:2], np.inf)
        m = self.lattice.matrix
        for sx in (-1, 0, 1):
            for sy in (-1, 0, 1):
                dd = d - np.round(d) + np.array([sx, sy, 0])
                best = np.minimum(best, np.linalg.norm(dd @ m, axis=-1))
        return best

    def __repr__(self) -> str:
        return f"HostLattice({self.name}, n_sites={self.n_sites}, species={self.species})"


def _symmetry_resource(host: HostLattice):
    return resources.files("invdesign.resources") / f"symmetry_{host.fingerprint}_{host.symprec:g}.npz"


def _packaged_symmetry(host: HostLattice) -> dict | None:
    """The packaged ``perms``/``pair_orbits`` of ``host`` (checked to be permutations), or None."""
    if "packaged_symmetry" not in host._cache:
        ref = _symmetry_resource(host)
        out = None
        if ref.is_file():
            with resources.as_file(ref) as path, np.load(path) as f:
                out = {k: f[k] for k in f.files}
            perms = out["perms"]
            ok = perms.shape[1] == host.n_sites and np.array_equal(np.sort(perms, axis=1)[0], np.arange(host.n_sites))
            ok = ok and np.array_equal(perms[0], np.arange(host.n_sites))
            if not ok:
                raise InvdesignError(f"packaged symmetry table {ref.name} does not fit host {host.name}")
            perms.setflags(write=False)
            out["pair_orbits"] = out["pair_orbits"].astype(np.int32)
        host._cache["packaged_symmetry"] = out
    return host._cache["packaged_symmetry"]


def _user_symmetry_path(host: HostLattice, what: str) -> Path:
    """Where hosts without a packaged table cache ``perms``/``pair_orbits`` (``$INVDESIGN_CACHE_DIR``, default
    ``~/.cache/invdesign``, as :func:`invdesign.data.dataset.cache_dir`; keyed by the host's content hash)."""
    import os

    root = Path(os.environ.get("INVDESIGN_CACHE_DIR", Path.home() / ".cache" / "invdesign"))
    return root / f"host-{host.fingerprint}-{host.symprec:g}-{what}.npy"


def _read_user_symmetry(host: HostLattice, what: str) -> np.ndarray | None:
    """The cached ``perms`` (checked: identity first, every row a permutation) or ``pair_orbits``, or None."""
    path = _user_symmetry_path(host, what)
    if host._cache.get("compute_symmetry") or not path.is_file():
        return None
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    n = host.n_sites
    if what == "perms":
        ok = arr.ndim == 2 and arr.shape[1] == n and np.array_equal(arr[0], np.arange(n))
        ok = ok and bool((np.sort(arr, axis=1) == np.arange(n)[None]).all())
    else:
        ok = arr.shape == (n, n) and arr.dtype == np.int32
    if not ok:
        return None  # recomputed and rewritten
    arr.setflags(write=False)
    return arr


def _write_user_symmetry(host: HostLattice, what: str, arr: np.ndarray) -> None:
    import os
    import tempfile

    path = _user_symmetry_path(host, what)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy.tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, np.asarray(arr))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        pass  # a read-only cache only costs time


def write_symmetry_table(host: HostLattice, folder: str | Path) -> Path:
    """Write ``symmetry_<fingerprint>_<symprec>.npz`` (perms from spglib, pair orbits) for packaging."""
    host._cache["packaged_symmetry"] = None  # compute, do not read
    host._cache["compute_symmetry"] = True
    for attr in ("perms", "pair_orbits"):
        host.__dict__.pop(attr, None)
    path = Path(folder) / _symmetry_resource(host).name
    np.savez_compressed(path, perms=host.perms, pair_orbits=host.pair_orbits.astype(np.int16))
    return path


def _orbit_labels(images: np.ndarray, n: int) -> np.ndarray:
    """Orbit labels of points ``0..n-1`` given ``images[g, x]`` (a group, so orbits = min image)."""
    rep = images.min(axis=0)  # smallest point in each orbit (group closed under composition)
    _, labels = np.unique(rep, return_inverse=True)
    return labels.astype(np.int64)


class _SiteLookup:
    """Map fractional coordinates (mod 1) to host-site indices by rounding to a grid."""

    def __init__(self, frac: np.ndarray, decimals: int = 3) -> None:
        self.scale = 10**decimals
        keys = self._keys(frac)
        self.table = {k: i for i, k in enumerate(map(tuple, keys))}
        if len(self.table) != len(frac):
            raise InvdesignError("host sites coincide after rounding; the unit cell has overlapping atoms")

    def _keys(self, frac: np.ndarray) -> np.ndarray:
        return np.mod(np.round(np.mod(frac, 1.0) * self.scale).astype(np.int64), self.scale)

    def find(self, frac: np.ndarray) -> np.ndarray | None:
        out = np.empty(len(frac), dtype=np.int16)
        for i, k in enumerate(map(tuple, self._keys(frac))):
            j = self.table.get(k)
            if j is None:
                return None
            out[i] = j
        return out


_DEFAULT: list[HostLattice] = []
_INTERNED: dict[tuple[str, float], HostLattice] = {}


def _default_host() -> HostLattice:
    if not _DEFAULT:
        _DEFAULT.append(HostLattice.from_unit_cell("builtin:MoS2", (8, 8)))
    return _DEFAULT[0]
