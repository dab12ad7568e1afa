"""Size limits checked before any work: a request that would not fit (memory) or finish (time) is
refused in one line saying what to lower, instead of being killed at several GB (issue 26, item 3).

- :func:`check_supercell`: a host supercell of at most :data:`MAX_SITES` sites (the symmetry tables
  grow as ``sites^3``: 24x24 MoS2, 1,728 sites, takes ~45 s; 32x32, 3,072 sites, a few minutes).
- :func:`check_enumeration`: an orbit enumeration whose estimated peak memory is at most
  :data:`MAX_ENUM_BYTES` (``INVDESIGN_MAX_ENUM_GB`` overrides it): MoS2 8x8 up to 3 defects takes
  0.2 GB, up to 4 defects 7.7 GB (refused by default), up to 6 defects terabytes.
- :func:`check_defect_range`: no more defects than the sites the allowed defect types can occupy.
- :func:`check_number`: an option value that is a finite number within its range.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from invdesign.errors import InvdesignError

MAX_SITES = 3500  # 32x32 MoS2 (3,072 sites) fits; 100x100 (30,000) does not
ENUM_BYTES_PER_CANDIDATE_SITE = 8  # measured: 8x8 MoS2 to 4 defects peaks at 7.7 GB for ~9.3e8 candidate-site bytes


def max_enum_bytes() -> float:
    """Largest estimated peak memory of an enumeration (bytes): ``INVDESIGN_MAX_ENUM_GB`` or 4 GB."""
    try:
        gb = float(os.environ.get("INVDESIGN_MAX_ENUM_GB", "4"))
    except ValueError:
        gb = 4.0
    return (gb if math.isfinite(gb) and gb > 0 else 4.0) * 2**30


def check_number(name: str, value, lo: float | None = None, hi: float | None = None, integer: bool = False):
    """``value`` when it is a finite number in ``[lo, hi]``; one line naming the option otherwise."""
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InvdesignError(f"{name} must be a number, not {value!r}") from None
    rng = (f"between {lo:g} and {hi:g}" if lo is not None and hi is not None
           else f"at least {lo:g}" if lo is not None else f"at most {hi:g}" if hi is not None else "finite")
    if not math.isfinite(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
        shown = value if integer or not math.isfinite(v) else f"{v:g}"
        raise InvdesignError(f"{name} must be a finite number {rng}, not {shown}" if not integer
                             else f"{name} must be an integer {rng}, not {shown}")
    return value


def _unit_cell_and_supercell(host: str, supercell) -> tuple[str, object]:
    """The unit cell and supercell a ``--host`` names (a TOML config holds both)."""
    if str(host).endswith(".toml"):
        import tomllib

        try:
            cfg = tomllib.loads(Path(host).read_text()).get("host", {})
        except (OSError, ValueError):
            return "", None  # HostLattice.from_config names the reason
        uc = cfg.get("unit_cell", "builtin:MoS2")
        if not str(uc).startswith("builtin:") and not Path(uc).is_absolute():
            uc = str(Path(host).parent / uc)
        return uc, cfg.get("supercell", [8, 8])
    return host, supercell


def supercell_sites(unit_cell, supercell) -> int:
    """Number of sites of ``supercell`` of ``unit_cell`` (a spec or a Structure), without building it."""
    from invdesign.lattice.host import _as_matrix, load_unit_cell

    m = _as_matrix(supercell)
    det = abs(round(float(_det(m))))
    return len(load_unit_cell(unit_cell)) * det


def _det(m) -> float:
    import numpy as np

    return float(np.linalg.det(np.asarray(m, dtype=float)))


def check_supercell(host, supercell) -> None:
    """Refuse a host supercell of more than :data:`MAX_SITES` sites, before it is built."""
    uc, sc = _unit_cell_and_supercell(host, supercell)
    if sc is None:
        return
    n = supercell_sites(uc, sc)
    if n > MAX_SITES:
        shown = "x".join(map(str, sc)) if isinstance(sc, (list, tuple)) else str(sc)
        raise InvdesignError(f"supercell {shown} has {n:,} sites; at most {MAX_SITES:,} fit in memory and time "
                             "(its symmetry tables grow as sites^3): lower --supercell")


def _type_sites(host, types) -> int:
    """Sites the defect types ``types`` (indices into ``host.defect_types``; None: all) can occupy."""
    subs = {host.defect_types[t][0] for t in (range(len(host.defect_types)) if types is None else types)}
    return int(sum(int((host.sublattice == s).sum()) for s in subs))


def check_defect_range(host, max_defects: int, min_defects: int, types=None) -> None:
    """Refuse defect counts beyond the sites the allowed types can occupy (``types``: indices or None)."""
    n = _type_sites(host, types)
    if min_defects > n or max_defects > n:
        which = "--min-defects" if min_defects > n else "--max-defects"
        val = min_defects if min_defects > n else max_defects
        raise InvdesignError(f"{which} {val} is beyond the {n} sites of {host.name} that the allowed defect types "
                             f"can occupy; lower it to at most {n}")


def estimate_orbit_count(host, max_defects: int, min_defects: int, types) -> float:
    """Approximate number of symmetry-distinct configurations of ``min_defects..max_defects`` defects of the
    defect ``types`` (indices into ``host.defect_types``): labelled placements divided by the group order (a
    lower bound, tight for large spaces)."""
    sizes = {s: int((host.sublattice == s).sum()) for s in range(len(host.sublattices))}
    by_sub: dict[int, int] = {}
    for t in types:
        by_sub[host.defect_types[t][0]] = by_sub.get(host.defect_types[t][0], 0) + 1
    # number of placements of k defects = coefficient of x^k in prod_s sum_j C(n_s, j) m_s^j x^j
    poly = [0] * (max_defects + 1)
    poly[0] = 1
    for s, m in by_sub.items():
        term = [math.comb(sizes[s], j) * m**j for j in range(max_defects + 1)]
        poly = [sum(poly[i] * term[k - i] for i in range(k + 1)) for k in range(max_defects + 1)]
    return float(sum(poly[min_defects:])) / host.n_ops


def enumeration_bytes(host, max_defects: int, types=None) -> float:
    """Estimated peak memory (bytes) of enumerating up to ``max_defects`` defects of ``types`` (indices; None: all).

    Level ``k`` expands every ``(k-1)``-defect orbit by one defect on each free site: ``orbits(k-1) *
    type_sites * types_per_site`` candidate rows of ``n_sites`` bytes, canonicalised together.
    """
    idx = tuple(range(len(host.defect_types))) if types is None else tuple(sorted(set(types)))
    if not idx:
        return 0.0
    per_site = max(sum(1 for t in idx if host.defect_types[t][0] == s) for s in {host.defect_types[t][0] for t in idx})
    sites = _type_sites(host, idx)
    peak = 0.0
    for k in range(1, max_defects + 1):
        prev = 1.0 if k == 1 else max(1.0, estimate_orbit_count(host, k - 1, k - 1, idx))
        peak = max(peak, prev * sites * per_site * host.n_sites * ENUM_BYTES_PER_CANDIDATE_SITE)
        if peak > 1e18:
            break
    return peak


def check_enumeration(host, max_defects: int, min_defects: int = 1, types=None) -> None:
    """Refuse, before any work, an enumeration beyond the host's sites or over :func:`max_enum_bytes`."""
    check_defect_range(host, max_defects, min_defects, types)
    need = enumeration_bytes(host, max_defects, types)
    limit = max_enum_bytes()
    if need > limit:
        raise InvdesignError(
            f"enumerating {host.name} up to {max_defects} defects would need about {_size(need)} of memory "
            f"(limit {_size(limit)}, INVDESIGN_MAX_ENUM_GB): lower --max-defects, restrict the defect types "
            "or use a smaller --supercell")


def _size(b: float) -> str:
    return f"{b / 2**40:,.0f} TB" if b >= 2**40 else f"{b / 2**30:.1f} GB"
