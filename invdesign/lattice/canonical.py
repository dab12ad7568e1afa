"""Exact symmetry equivalence: canonical forms and keys of configurations.

The canonical form of a configuration is the lexicographically smallest sorted list of
``site * n_species + species`` codes of its defects over all ``G`` host symmetry operations.
Two configurations have equal canonical forms iff one operation maps one onto the other.
Keys are strings ``"<host>:<site>=<species>,..."`` (``"<host>:pristine"`` for no defects).

Everything is batched: configurations with the same defect count are processed together as
``(M, G, k)`` integer arrays, packed into one int64 per image when ``k * bits <= 63``.
"""

from __future__ import annotations

import numpy as np

from invdesign.errors import InvdesignError
from invdesign.lattice.host import HostLattice

_CHUNK_ELEMS = 4_000_000  # M * G * k per chunk (int64 -> 32 MB)


def defect_lists(occ: np.ndarray, host: HostLattice) -> tuple[np.ndarray, list[np.ndarray]]:
    """Split ``(N, n_sites)`` occupancies into defect counts ``(N,)`` and per-config site arrays."""
    mask = occ != host.host_code[None, :]
    counts = mask.sum(axis=1)
    return counts, [np.flatnonzero(m) for m in mask]


def _bits(host: HostLattice) -> int:
    return int(np.ceil(np.log2(host.n_sites * host.n_species + 1)))


def _ops_to_min(host: HostLattice) -> np.ndarray:
    """``(n_sites, S)`` operations sending each site to the smallest site of its orbit (-1 pads).

    ``S`` is the largest site stabilizer (12 for Mo in 8x8 MoS2, 6 for S).
    """
    cached = host._cache.get("ops_to_min")
    if cached is None:
        p = host.perms.astype(np.int64)
        orbit_min = p.min(axis=0)  # (n,) smallest site of each site's orbit
        hits = p == orbit_min[None, :]  # (G, n)
        width = int(hits.sum(axis=0).max())
        cached = np.full((host.n_sites, width), -1, dtype=np.int64)
        for s in range(host.n_sites):
            g = np.flatnonzero(hits[:, s])
            cached[s, : len(g)] = g
        host._cache["ops_to_min"] = cached
        host._cache["orbit_min"] = orbit_min
    return cached


def canonical_forms(
    occ: np.ndarray, host: HostLattice, exhaustive: bool = False
) -> tuple[list[tuple[int, ...]], np.ndarray, np.ndarray]:
    """Canonical forms of a batch.

    The minimum over all ``G`` images is found among the few operations that send a defect
    with the smallest ``(orbit-minimum site, species)`` onto that minimum site: any minimising
    image starts with that code, so one of these operations produces it. ``exhaustive=True``
    scans all ``G`` operations instead (the reference the fast path is tested against).

    Args:
        occ: ``(N, n_sites)`` uint8 occupancies.
        host: their host lattice.
        exhaustive: scan every operation.

    Returns:
        forms: list of ``N`` sorted tuples of ``site * n_species + species`` codes.
        op: ``(N,)`` index of an operation ``g`` with ``perms[g]`` mapping the config to its form.
        stabilizer: ``(N,)`` number of operations fixing the config (orbit size = G / stabilizer).
    """
    occ = np.asarray(occ)
    if occ.ndim != 2 or occ.shape[1] != host.n_sites:
        raise InvdesignError(f"occupancies must be (N, {host.n_sites}); got {occ.shape}")
    N = occ.shape[0]
    perms = host.perms.astype(np.int64)
    G = perms.shape[0]
    ns = host.n_species
    bits = _bits(host)
    ops_to_min = _ops_to_min(host)
    orbit_min = host._cache["orbit_min"]
    mask = occ != host.host_code[None, :]
    counts = mask.sum(axis=1)
    forms: list[tuple[int, ...]] = [()] * N
    op = np.zeros(N, dtype=np.int64)
    stab = np.zeros(N, dtype=np.int64)
    for k in np.unique(counts):
        idx = np.flatnonzero(counts == k)
        if k == 0:
            stab[idx] = G
            continue
        sites = np.nonzero(mask[idx])[1].reshape(len(idx), k)  # (M, k)
        codes = np.take_along_axis(occ[idx].astype(np.int64), sites, axis=1)
        n_cand = G if exhaustive else k * ops_to_min.shape[1]
        step = max(1, _CHUNK_ELEMS // (n_cand * k))
        for s in range(0, len(idx), step):
            sl = slice(s, s + step)
            st, co = sites[sl], codes[sl]
            m = len(st)
            if exhaustive:
                cand = np.broadcast_to(np.arange(G), (m, G))
                valid = np.ones((m, G), dtype=bool)
            else:
                first = orbit_min[st] * ns + co  # (m, k)
                lead = first == first.min(axis=1, keepdims=True)
                cand = ops_to_min[st].reshape(m, -1)  # (m, k*S)
                valid = (cand >= 0) & np.repeat(lead, ops_to_min.shape[1], axis=1)
                cand = np.where(valid, cand, 0)
            enc = perms[cand[:, :, None], st[:, None, :]] * ns + co[:, None, :]  # (m, C, k)
            enc.sort(axis=2)
            if k * bits <= 63:
                packed = np.zeros(enc.shape[:2], dtype=np.int64)
                for j in range(k):
                    packed = (packed << bits) | enc[:, :, j]
                packed = np.where(valid, packed, np.iinfo(np.int64).max)
                arg = packed.argmin(axis=1)
                best = packed[np.arange(m), arg]
                op[idx[sl]] = cand[np.arange(m), arg]
                stab[idx[sl]] = (packed == best[:, None]).sum(axis=1)
                rows = enc[np.arange(m), arg].tolist()
                for i, row in zip(idx[sl], rows):
                    forms[i] = tuple(row)
            else:  # many defects: lexicographic minimum row by row
                for r, i in enumerate(idx[sl]):
                    rows = enc[r][valid[r]]
                    order = np.lexsort(rows.T[::-1])
                    best_row = rows[order[0]]
                    forms[i] = tuple(int(v) for v in best_row)
                    op[i] = cand[r][valid[r]][order[0]]
                    stab[i] = int(np.all(rows == best_row, axis=1).sum())
    return forms, op, stab


def form_to_key(form: tuple[int, ...], host: HostLattice) -> str:
    """Key string of a canonical form."""
    if not form:
        return f"{host.name}:pristine"
    ns = host.n_species
    return f"{host.name}:" + ",".join(f"{c // ns}={host.species[c % ns]}" for c in form)


def canonical_keys(occ: np.ndarray, host: HostLattice) -> list[str]:
    """Canonical key strings of ``(N, n_sites)`` occupancies; equal iff symmetry-equivalent."""
    forms, _, _ = canonical_forms(occ, host)
    return [form_to_key(f, host) for f in forms]


def canonical_key(config, host: HostLattice | None = None) -> str:
    """Canonical key of one configuration (a :class:`Configuration`, or an occupancy + host)."""
    from invdesign.lattice.config import Configuration

    if isinstance(config, Configuration):
        return config.key
    if host is None:
        raise InvdesignError("canonical_key of a bare occupancy array needs its host")
    return canonical_keys(np.asarray(config)[None], host)[0]


def key_to_occ(key: str, host: HostLattice) -> np.ndarray:
    """Occupancy of the canonical representative named by ``key`` (inverse of :func:`form_to_key`)."""
    name, _, body = key.partition(":")
    if name != host.name:
        raise InvdesignError(f"key {key!r} is for host {name!r}, not {host.name!r}")
    occ = host.host_code.copy()
    if body == "pristine":
        return occ
    try:
        for item in body.split(","):
            site, sp = item.split("=")
            occ[int(site)] = host.species_code[sp]
    except (ValueError, KeyError):
        raise InvdesignError(f"malformed canonical key {key!r}") from None
    return occ


def canonicalize(occ: np.ndarray, host: HostLattice) -> np.ndarray:
    """``(N, n_sites)`` canonical representatives (the occupancy of each canonical form)."""
    forms, _, _ = canonical_forms(occ, host)
    ns = host.n_species
    out = np.repeat(host.host_code[None], len(forms), axis=0)
    for i, f in enumerate(forms):
        for c in f:
            out[i, c // ns] = c % ns
    return out


def apply_op(occ: np.ndarray, host: HostLattice, g: int | np.ndarray) -> np.ndarray:
    """Image of occupancies under operation(s) ``g``: ``out[..., perms[g, i]] = occ[..., i]``."""
    occ = np.asarray(occ)
    perm = host.perms[g].astype(np.int64)
    out = np.empty_like(occ)
    if perm.ndim == 1:
        out[..., perm] = occ
    else:
        np.put_along_axis(out, perm, occ, axis=-1)
    return out
