"""Datasets: configurations on one host with their DFT targets, loaded fast and cached.

A :class:`Dataset` is ``ids (N,)``, ``occ (N, n_sites) uint8`` and a targets DataFrame (eV).
Loaders:

- :func:`load_2dmd`: the 2DMD "processed" layout (``initial.tar.gz`` or ``initial/``,
  ``targets.csv[.gz]``, ``unit_cells/*.cif``; ``descriptors.csv``, ``elements.csv``,
  ``initial_structures.csv`` are accepted and not required). A folder whose sub-folders have
  this layout (the high-density release: ``MoS2_500/``, ``WSe2_500/``, ...) gives one dataset each
  through :func:`load_2dmd_collection`.
- :func:`load_folder`: a folder of CIF/POSCAR/JSON files with an optional ``targets.csv``
  (``_id`` or ``id`` column).
- :func:`map_structures`: any STRUCTURES arguments mapped onto a given host.

The second load of the same inputs comes from a compact ``.npz`` cache keyed by the content
hash of the inputs and the host (``$INVDESIGN_CACHE_DIR``, default ``~/.cache/invdesign``).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from invdesign.data.readers import RawStructure, SourceRecord, iter_sources, parse
from invdesign.errors import InvdesignError
from invdesign.lattice.canonical import canonical_keys
from invdesign.lattice.config import DEFAULT_TOL, get_mapper
from invdesign.lattice.enumerate import compositions
from invdesign.lattice.host import HostLattice
from invdesign.progress import track

TARGETS = ("formation_energy_per_site", "homo_lumo_gap")
CACHE_VERSION = "1"


@dataclass
class Dataset:
    """Configurations on one host with optional targets.

    Attributes:
        host: the host lattice.
        ids: ``(N,)`` str structure ids (file stems / 2DMD ``_id``).
        occ: ``(N, n_sites)`` uint8 occupancies.
        targets: DataFrame with ``N`` rows in ``ids`` order (eV columns; may have no columns).
        name: a label for reports.
        fingerprint: content hash of the inputs and host.
    """

    host: HostLattice
    ids: np.ndarray
    occ: np.ndarray
    targets: pd.DataFrame = field(default_factory=pd.DataFrame)
    name: str = ""
    fingerprint: str = ""
    extras: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    @cached_property
    def keys(self) -> list[str]:
        """Canonical keys, one per configuration."""
        return canonical_keys(self.occ, self.host)

    @cached_property
    def composition(self) -> np.ndarray:
        """``(N, T)`` defect-type counts over ``host.defect_types``."""
        return compositions(self.occ, self.host)

    @property
    def n_defects(self) -> np.ndarray:
        return self.composition.sum(axis=1)

    def y(self, names: Sequence[str] = TARGETS) -> np.ndarray:
        """``(N, len(names))`` float targets in eV."""
        missing = [n for n in names if n not in self.targets.columns]
        if missing:
            raise InvdesignError(f"dataset {self.name or '?'} has no target column(s) {missing}")
        return self.targets[list(names)].to_numpy(dtype=float)

    def subset(self, idx: np.ndarray) -> Dataset:
        idx = np.asarray(idx)
        return Dataset(
            self.host,
            self.ids[idx],
            self.occ[idx],
            self.targets.iloc[idx].reset_index(drop=True) if len(self.targets.columns) else pd.DataFrame(index=range(len(idx))),
            self.name,
            self.fingerprint,
            self.extras,
        )

    def summary(self) -> dict:
        """Counts, defect-type table and target ranges (what ``invdesign data info`` prints)."""
        labels = [self.host.defect_label(s, c) for s, c in self.host.defect_types]
        comp = self.composition
        out: dict = {
            "name": self.name,
            "host": self.host.name,
            "spacegroup": self.host.spacegroup,
            "n_sites": self.host.n_sites,
            "structures": len(self),
            "distinct_classes": len(set(self.keys)),
            "by_n_defects": {int(k): int(v) for k, v in zip(*np.unique(comp.sum(1), return_counts=True))},
            "defect_types": {lab: {"structures": int((comp[:, t] > 0).sum()), "defects": int(comp[:, t].sum())} for t, lab in enumerate(labels)},
            "targets": {},
            "extra_files": self.extras,
        }
        for col in self.targets.columns:
            v = pd.to_numeric(self.targets[col], errors="coerce")
            if v.notna().any():
                out["targets"][col] = {"min": float(v.min()), "max": float(v.max()), "mean": float(v.mean()), "std": float(v.std())}
        return out


# ---------------------------------------------------------------------- hosts
def infer_host(raw: RawStructure, unit_cell, substituents: dict | None = None) -> HostLattice:
    """Host for ``raw`` from ``unit_cell``: supercell = round(a / a_uc) x round(b / b_uc)."""
    from pymatgen.core import Lattice

    from invdesign.lattice.host import load_unit_cell

    uc = load_unit_cell(unit_cell)
    abc = Lattice(raw.lattice).abc
    na, nb = (round(abc[0] / uc.lattice.a), round(abc[1] / uc.lattice.b))
    if na < 1 or nb < 1:
        raise InvdesignError("cell is smaller than the unit cell", source=raw.source)
    return HostLattice.from_unit_cell(uc, (na, nb, 1), substituents)


# ---------------------------------------------------------------------- mapping
def nearest_site_distance(host: HostLattice) -> float:
    """The shortest distance between two sites of ``host`` (Angstrom; periodic images included), from its unit cell."""
    uc = host.unit_cell
    key = host.fingerprint
    if key not in _NEAREST:
        _, _, _, d = uc.get_neighbor_list(6.0)
        _NEAREST[key] = float(d[d > 1e-6].min()) if (d > 1e-6).any() else float("inf")
    return _NEAREST[key]


_NEAREST: dict[str, float] = {}


def map_raw(raws: Iterable[RawStructure], host: HostLattice, tol: float = DEFAULT_TOL) -> tuple[list[str], np.ndarray]:
    """Map parsed structures onto ``host``: ids and ``(N, n_sites)`` occupancies."""
    if not (np.isfinite(tol) and tol > 0):
        raise InvdesignError(f"the mapping tolerance must be a finite positive distance in Angstrom, not {tol}")
    dmin = nearest_site_distance(host)
    if tol >= dmin:
        raise InvdesignError(f"the mapping tolerance {tol:g} A reaches the distance between neighbouring sites of host "
                             f"{host.name} ({dmin:.3f} A): an atom that far from one site may sit on another; give a "
                             f"tolerance below {dmin:.2f} A (default {DEFAULT_TOL})")
    mapper = get_mapper(host)
    ids, rows = [], []
    for raw in raws:
        frac = mapper.host_frac(raw.lattice, raw.frac, raw.source)
        rows.append(mapper.map_atoms(raw.species, frac, source=raw.source, tol=tol))
        ids.append(raw.id)
    occ = np.stack(rows) if rows else np.zeros((0, host.n_sites), np.uint8)
    return ids, occ


def map_structures(
    paths: Sequence[str | Path], host: HostLattice | None = None, tol: float = DEFAULT_TOL, fast: bool = True
) -> Dataset:
    """Read STRUCTURES (files, folders, archives) and map them onto ``host`` (default: MoS2 8x8).

    Duplicate ids are an error (ids are file stems and key every output row).
    """
    host = host or HostLattice.default()
    records = list(iter_sources(paths))
    raws = (parse(r, fast=fast) for r in track(records, "reading structures"))
    ids, occ = map_raw(raws, host, tol)
    _check_unique(ids, records)
    return Dataset(host, np.array(ids, dtype=object), occ, pd.DataFrame(index=range(len(ids))), name=",".join(map(str, paths)))


def recognised_host(paths: Sequence[str | Path]) -> HostLattice | None:
    """The packaged host of the first structure among STRUCTURES ``paths`` (None: none there, or no packaged
    host fits it; the caller then uses its default and the mapping names any misfit file)."""
    from invdesign.lattice.hosts import recognise

    first = next(iter(iter_sources(paths)), None)
    if first is None:
        return None
    raw = parse(first)
    try:
        return recognise(raw.lattice, list(raw.species), raw.source)
    except InvdesignError:
        return None


def structures_dataset(structures: Sequence, host: HostLattice | None = None, tol: float = DEFAULT_TOL) -> Dataset:
    """pymatgen Structures or ASE Atoms mapped onto ``host`` (default: MoS2 8x8) as a Dataset; ids ``"0"``,
    ``"1"``, ... in their order (as :func:`invdesign.api.predict` gives them)."""
    from invdesign.lattice.config import as_structure, structure_to_config

    host = host or HostLattice.default()
    occ = []
    for i, obj in enumerate(structures):
        st = as_structure(obj)
        if st is None:
            raise InvdesignError(f"not a pymatgen Structure or an ASE Atoms: {type(obj).__name__}", source=f"structure {i}")
        occ.append(structure_to_config(st, host, source=f"structure {i}", tol=tol))
    occ_arr = np.stack(occ) if occ else np.zeros((0, host.n_sites), np.uint8)
    ids = np.array([str(i) for i in range(len(occ))], dtype=object)
    return Dataset(host, ids, occ_arr, pd.DataFrame(index=range(len(ids))), name="structures")


def _check_unique(ids: list[str], records: list[SourceRecord]) -> None:
    seen: dict[str, str] = {}
    for i, r in zip(ids, records):
        if i in seen:
            raise InvdesignError(f"duplicate structure id {i!r} (also {seen[i]})", source=r.source)
        seen[i] = r.source


# ---------------------------------------------------------------------- cache
def cache_dir() -> Path:
    return Path(os.environ.get("INVDESIGN_CACHE_DIR", Path.home() / ".cache" / "invdesign"))


def _hash_files(paths: Iterable[Path], extra: str) -> str:
    h = hashlib.sha256(extra.encode())
    for p in paths:
        h.update(p.name.encode())
        if p.is_dir():
            for q in sorted(p.rglob("*")):
                if q.is_file():
                    h.update(str(q.relative_to(p)).encode())
                    h.update(q.read_bytes())
        else:
            h.update(p.read_bytes())
    return h.hexdigest()[:24]


def _cache_load(key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, str] | None:
    """``(ids, occ, supercell matrix, packaged host name or "")`` from the cache, or None (missing or unreadable)."""
    path = cache_dir() / f"{key}.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            name = str(z["host"]) if "host" in z.files else ""
            return z["ids"].astype(object), z["occ"], z["matrix"], name
    except (OSError, ValueError, KeyError):
        return None


def _cache_save(key: str, ids: np.ndarray, occ: np.ndarray, matrix: np.ndarray, host: str = "") -> None:
    d = cache_dir()
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, suffix=".npz.tmp")
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(fh, ids=np.array(ids, dtype=str), occ=occ, matrix=matrix, host=np.array(host))
        os.replace(tmp, d / f"{key}.npz")
    except OSError:
        pass  # a read-only cache only costs time, never results


# ---------------------------------------------------------------------- 2DMD
def _find(root: Path, *names: str) -> Path | None:
    for n in names:
        if (root / n).exists():
            return root / n
    return None


def is_2dmd(path: Path) -> bool:
    return path.is_dir() and _find(path, "initial.tar.gz", "initial") is not None and _find(path, "targets.csv.gz", "targets.csv") is not None


def read_targets(path: Path, raw: bool = False) -> pd.DataFrame:
    """A targets/labels table with its id column renamed ``_id`` (str), with ``homo_lumo_gap`` taken from
    ``homo_lumo_gap_min`` (spin-polarised sets) or ``band_gap`` where it is absent. ``raw``: every column read as
    text (no NaN guessing), for callers that check each value (:func:`invdesign.campaign.oracles.check_labels`)."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False) if raw else pd.read_csv(path)
    except Exception as exc:  # pandas raises many types
        raise InvdesignError(f"cannot read targets ({exc.__class__.__name__}: {exc})", source=str(path)) from None
    idcol = "_id" if "_id" in df.columns else ("id" if "id" in df.columns else None)
    if idcol is None:
        raise InvdesignError("targets file has no '_id' or 'id' column", source=str(path))
    df = df.rename(columns={idcol: "_id"})
    df["_id"] = df["_id"].astype(str)
    if "homo_lumo_gap" not in df.columns and "homo_lumo_gap_min" in df.columns:
        # spin-polarised 2DMD sets: the gap is the smaller of the two spin channels' (the published benchmarks' choice)
        df["homo_lumo_gap"] = df["homo_lumo_gap_min"]
    if "homo_lumo_gap" not in df.columns and "band_gap" in df.columns:
        df["homo_lumo_gap"] = df["band_gap"]
    if df["_id"].duplicated().any():
        raise InvdesignError(f"duplicate id {df['_id'][df['_id'].duplicated()].iloc[0]!r}", source=str(path))
    return df


def _unit_cell_for(root: Path, first: RawStructure):
    cells = sorted((root / "unit_cells").glob("*.cif")) if (root / "unit_cells").is_dir() else []
    if not cells:
        return "builtin:MoS2"
    if len(cells) == 1:
        return cells[0]
    from collections import Counter

    from invdesign.lattice.host import load_unit_cell

    counts = Counter(first.species)
    # the unit cell whose elements make up most of the structure's atoms (substituents are a minority)
    share = [sum(counts[el.symbol] for el in load_unit_cell(c).composition.elements) / len(first.species) for c in cells]
    best = int(np.argmax(share))
    if share[best] <= 0.5 or sorted(share)[-2:] == [share[best]] * 2:
        raise InvdesignError(f"cannot tell which of {[c.name for c in cells]} is the host", source=str(root))
    return cells[best]


def _auto_host(root: Path, first: RawStructure | None, matrix: np.ndarray | None = None, packaged: str = "") -> HostLattice:
    """The host of a 2DMD folder: the packaged host its first structure sits on (recognised, any vacuum height;
    or ``packaged`` by name with supercell ``matrix`` from the cache), else one built from the folder's unit cell."""
    from invdesign.lattice.hosts import packaged_host, recognise

    if first is not None:
        try:
            host = recognise(first.lattice, list(first.species), first.source)
            host._cache["packaged_name"] = host.unit_cell.composition.reduced_formula
            return host
        except InvdesignError:
            pass
    elif packaged:
        host = packaged_host(packaged, (int(matrix[0, 0]), int(matrix[1, 1])))
        host._cache["packaged_name"] = packaged
        return host
    cells = sorted((root / "unit_cells").glob("*.cif")) if (root / "unit_cells").is_dir() else []
    uc = cells[0] if len(cells) == 1 else None
    if uc is None and cells:
        uc = _unit_cell_for(root, first if first is not None else parse(next(iter_sources([_find(root, "initial.tar.gz", "initial")]))))
    uc = uc if uc is not None else "builtin:MoS2"
    return infer_host(first, uc) if first is not None else HostLattice.from_unit_cell(uc, matrix)


def load_2dmd(path: str | Path, host: HostLattice | None = None, tol: float = DEFAULT_TOL, use_cache: bool = True) -> Dataset:
    """Load one 2DMD processed dataset folder (see module docstring)."""
    root = Path(path)
    if not is_2dmd(root):
        raise InvdesignError("not a 2DMD dataset folder (needs initial.tar.gz or initial/, and targets.csv[.gz])", source=str(root))
    initial = _find(root, "initial.tar.gz", "initial")
    tpath = _find(root, "targets.csv.gz", "targets.csv")
    assert initial is not None and tpath is not None
    targets = read_targets(tpath)
    extras = [n for n in ("descriptors.csv", "elements.csv", "initial_structures.csv") if (root / n).exists()]
    auto = host is None
    if auto:  # a packaged host recognised from the structures (any vacuum height), else the folder's unit cell
        cells = sorted((root / "unit_cells").glob("*.cif")) if (root / "unit_cells").is_dir() else []
        cell_tag = hashlib.sha256(b"".join(c.read_bytes() for c in cells)).hexdigest()[:16]
        key = _hash_files([initial], f"{CACHE_VERSION}|recognise:{cell_tag}|{tol}")
    else:
        key = _hash_files([initial], f"{CACHE_VERSION}|{host.fingerprint}|{tol}")
    cached = _cache_load(key) if use_cache else None
    if cached is not None:
        ids, occ, matrix, host_name = cached
        if auto:
            host = _auto_host(root, None, matrix, host_name)
    else:
        recs = list(iter_sources([initial]))
        if auto:
            host = _auto_host(root, parse(recs[0]))
        raws = (parse(r) for r in track(recs, f"reading {root.name}"))
        id_list, occ = map_raw(raws, host, tol)
        _check_unique(id_list, recs)
        ids = np.array(id_list, dtype=object)
        if use_cache:
            _cache_save(key, ids, occ, host.matrix, host._cache.get("packaged_name", ""))
    t = targets.set_index("_id")
    missing = [i for i in ids if i not in t.index]
    if missing:
        raise InvdesignError(f"{len(missing)} structures have no targets (first: {missing[0]})", source=str(tpath))
    tdf = t.loc[list(ids)].reset_index()
    return Dataset(host, ids, occ, tdf, name=root.name, fingerprint=key, extras=extras)


def load_2dmd_collection(path: str | Path, **kw) -> list[Dataset]:
    """Every 2DMD dataset under ``path``: itself, or its immediate sub-folders (high-density sets)."""
    root = Path(path)
    if is_2dmd(root):
        return [load_2dmd(root, **kw)]
    subs = sorted(p for p in root.iterdir() if is_2dmd(p)) if root.is_dir() else []
    if not subs:
        raise InvdesignError("no 2DMD dataset here or in its sub-folders", source=str(root))
    return [load_2dmd(p, **kw) for p in subs]


def load_folder(path: str | Path, host: HostLattice | None = None, targets: str | Path | None = None, tol: float = DEFAULT_TOL) -> Dataset:
    """A folder of CIF/POSCAR/JSON files, with ``targets`` CSV (default ``<folder>/targets.csv`` if present). Without
    ``host``: the packaged host the first structure is recognised as (as a 2DMD folder's), else MoS2 8x8."""
    root = Path(path)
    ds = map_structures([root], host if host is not None else recognised_host([root]), tol)
    tpath = Path(targets) if targets else next((p for p in (root / "targets.csv", root / "targets.csv.gz") if p.exists()), None)
    if tpath is not None:
        t = read_targets(tpath).set_index("_id")
        ds.targets = t.reindex(list(ds.ids)).reset_index()
    ds.name = root.name
    return ds


def load_dataset(path: str | Path, host: HostLattice | None = None, **kw) -> Dataset:
    """2DMD layout if it is one, else a folder of structure files."""
    p = Path(path)
    if not p.exists():
        raise InvdesignError("no such file or folder", source=str(p))
    if is_2dmd(p):
        return load_2dmd(p, host, **kw)
    if p.is_dir() and any(is_2dmd(q) for q in p.iterdir() if q.is_dir()):
        sets = load_2dmd_collection(p, host=host, **kw)
        if len(sets) > 1:
            raise InvdesignError(f"holds {len(sets)} datasets ({', '.join(s.name for s in sets)}); name one", source=str(p))
        return sets[0]
    return load_folder(p, host, **{k: v for k, v in kw.items() if k in ("targets", "tol")})


# ---------------------------------------------------------------------- splits
def split_indices(ids: Sequence[str], fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic train/val/test split by a seeded hash of each id.

    A structure's split depends only on its id and the seed, so it never changes when other
    structures are added or removed.
    """
    if abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) < 0:
        raise InvdesignError(f"split fractions {fractions} must be >= 0 and sum to 1")
    u = np.array([int(hashlib.sha256(f"{seed}:{i}".encode()).hexdigest()[:12], 16) / 16**12 for i in ids])
    a, b = fractions[0], fractions[0] + fractions[1]
    return {"train": np.flatnonzero(u < a), "val": np.flatnonzero((u >= a) & (u < b)), "test": np.flatnonzero(u >= b)}
