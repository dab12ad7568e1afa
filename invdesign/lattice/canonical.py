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


# Compare-swap networks that sort k = 2, 3, 4 values (faster than np.sort along a short axis).
_NETWORKS = {2: [(0, 1)], 3: [(0, 1), (1, 2), (0, 1)], 4: [(0, 1), (2, 3), (0, 2), (1, 3), (1, 2)]}


def _sorted_columns(enc: np.ndarray) -> list[np.ndarray]:
    """The last axis of ``enc`` ``(m, C, k)`` sorted ascending, as ``k`` arrays of shape ``(m, C)``."""
    k = enc.shape[2]
    if k not in _NETWORKS:
        return list(np.moveaxis(np.sort(enc, axis=2), 2, 0))
    cols = [enc[:, :, j] for j in range(k)]
    for a, b in _NETWORKS[k]:
        cols[a], cols[b] = np.minimum(cols[a], cols[b]), np.maximum(cols[a], cols[b])
    return cols


def _candidate_groups(
    sites: np.ndarray, codes: np.ndarray, host: HostLattice, exhaustive: bool
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Candidate operations per configuration, grouped by how many there are.

    Args:
        sites, codes: ``(M, k)`` defect sites and species codes of ``M`` configurations.

    Returns:
        ``[(rows, cand), ...]``: ``rows`` ``(m,)`` indices into the ``M`` configurations and
        ``cand`` ``(m, C)`` operation indices to scan for them (all ``G`` when exhaustive; else the
        operations sending a lead defect to its orbit-minimum site, without padding).
    """
    M = len(sites)
    G = host.n_ops
    if exhaustive:
        return [(np.arange(M), np.broadcast_to(np.arange(G), (M, G)))]
    ops_to_min = _ops_to_min(host)
    first = host._cache["orbit_min"][sites] * host.n_species + codes  # (M, k)
    lead = first == first.min(axis=1, keepdims=True)
    cand = ops_to_min[sites].reshape(M, -1)  # (M, k*S), -1 pads
    valid = (cand >= 0) & np.repeat(lead, ops_to_min.shape[1], axis=1)
    n_valid = valid.sum(axis=1)
    out = []
    for v in np.unique(n_valid):
        rows = np.flatnonzero(n_valid == v)
        out.append((rows, cand[rows][valid[rows]].reshape(len(rows), int(v))))
    return out


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
        codes = np.take_along_axis(occ[idx], sites, axis=1).astype(np.int64)
        for rows, cands in _candidate_groups(sites, codes, host, exhaustive):
            n_cand = cands.shape[1]
            step = max(1, _CHUNK_ELEMS // (n_cand * k))
            for s in range(0, len(rows), step):
                r = rows[s : s + step]
                st, co, cand = sites[r], codes[r], cands[s : s + step]
                m = len(r)
                enc = perms[cand[:, :, None], st[:, None, :]] * ns + co[:, None, :]  # (m, C, k)
                if k * bits <= 63:
                    cols = _sorted_columns(enc)  # k arrays (m, C), ascending
                    packed = cols[0]
                    for j in range(1, k):
                        packed = (packed << bits) | cols[j]
                    arg = packed.argmin(axis=1)
                    best = packed[np.arange(m), arg]
                    op[idx[r]] = cand[np.arange(m), arg]
                    stab[idx[r]] = (packed == best[:, None]).sum(axis=1)
                    low = (1 << bits) - 1
                    forms_k = np.stack([(best >> (bits * (k - 1 - j))) & low for j in range(k)], axis=1).tolist()
                    for i, row in zip(idx[r], forms_k):
                        forms[i] = tuple(row)
                else:  # many defects: lexicographic minimum row by row
                    enc.sort(axis=2)
                    for j, i in enumerate(idx[r]):
                        imgs = enc[j]
                        first = np.lexsort(imgs.T[::-1])[0]
                        best_row = imgs[first]
                        forms[i] = tuple(int(v) for v in best_row)
                        op[i] = cand[j, first]
                        stab[i] = int(np.all(imgs == best_row, axis=1).sum())
    return forms, op, stab


def _code_labels(host: HostLattice) -> list[str]:
    """``"site=species"`` for every code ``site * n_species + species`` (cached per host)."""
    labels = host._cache.get("code_labels")
    if labels is None:
        ns = host.n_species
        labels = [f"{c // ns}={host.species[c % ns]}" for c in range(host.n_sites * ns)]
        host._cache["code_labels"] = labels
    return labels


def form_to_key(form: tuple[int, ...], host: HostLattice) -> str:
    """Key string of a canonical form."""
    if not form:
        return f"{host.name}:pristine"
    labels = _code_labels(host)
    return f"{host.name}:" + ",".join([labels[c] for c in form])


def canonical_keys(occ: np.ndarray, host: HostLattice) -> list[str]:
    """Canonical key strings of ``(N, n_sites)`` occupancies; equal iff symmetry-equivalent."""
    forms, _, _ = canonical_forms(occ, host)
    return [form_to_key(f, host) for f in forms]


def canonical_key(config, host: HostLattice | None = None) -> str:
    """Canonical key of one configuration (a :class:`~invdesign.lattice.config.Configuration`, or an
    occupancy + host). Duck-typed on ``.occ``/``.host`` so this module needs nothing from ``config``
    (which imports this one)."""
    if hasattr(config, "occ") and hasattr(config, "host"):
        return canonical_keys(np.asarray(config.occ)[None], config.host)[0]
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
