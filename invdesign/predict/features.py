"""Wide exact invariant features of configurations (cluster-expansion-like counts).

``cluster_counts`` gives, per configuration, the number of defects of each type (``T`` singlets)
and the number of ordered defect pairs of each (type, type, pair orbit) (``T * T * n_pair_orbits``
pair terms; ``n_pair_orbits`` from :attr:`HostLattice.pair_orbits`). Every count is invariant
under all host operations because pair orbits are. For 8x8 MoS2: ``4 + 16 * 75 = 1204`` columns.
"""

from __future__ import annotations

import numpy as np

from invdesign.embed.geometry import defect_cloud, pair_index
from invdesign.lattice.host import HostLattice


def n_cluster_features(host: HostLattice) -> int:
    """Length of :func:`cluster_counts` rows."""
    T = len(host.defect_types)
    return T + T * T * (int(host.pair_orbits.max()) + 1)


def cluster_counts(occ: np.ndarray, host: HostLattice, orbits: np.ndarray | None = None,
                   n_orbits: int | None = None) -> np.ndarray:
    """``(N, n_sites)`` uint8 occupancies -> ``(N, T + T^2 n_pair_orbits)`` float32 counts.

    ``orbits (n_sites, n_sites)``: the pair-orbit column of each site pair (default ``host.pair_orbits``;
    ``-1``: the pair is not counted) with ``n_orbits`` orbits, e.g. a larger cell's pairs mapped onto
    the trained cell's orbits (:func:`invdesign.predict.transfer.mapped_cluster_counts`).
    """
    cloud = defect_cloud(occ, host)
    orb = host.pair_orbits if orbits is None else orbits
    T = len(host.defect_types)
    npo = int(host.pair_orbits.max()) + 1 if n_orbits is None else int(n_orbits)
    F = T + T * T * npo
    flat = []
    for k, (rows, sites, types) in cloud.groups.items():
        flat.append((rows[:, None] * F + types).ravel())
        pi, pj = pair_index(k)
        if len(pi):
            o = orb[sites[:, pi], sites[:, pj]]
            col = rows[:, None] * F + T + (types[:, pi] * T + types[:, pj]) * npo + o
            flat.append(col[o >= 0])
    idx = np.concatenate(flat) if flat else np.zeros(0, dtype=np.int64)
    return np.bincount(idx, minlength=cloud.n * F).astype(np.float32).reshape(cloud.n, F)


def poly2(z: np.ndarray) -> np.ndarray:
    """Degree-2 polynomial features of ``(N, d)``: ``1, z_i, z_i z_j (i <= j)``; ``(d+1)(d+2)/2`` columns (91 for d=12)."""
    n, d = z.shape
    iu, ju = np.triu_indices(d)
    return np.concatenate([np.ones((n, 1)), z, z[:, iu] * z[:, ju]], axis=1)


#: distance (A) standing for "no such pair" in :func:`pair_distances`: beyond any pair of an 8x8 cell
ABSENT_DISTANCE = 30.0


def orbit_distances(host: HostLattice) -> np.ndarray:
    """``(n_pair_orbits,)`` minimum-image distance (A) of each pair orbit (one value per orbit: symmetry
    operations are isometries)."""
    npo = int(host.pair_orbits.max()) + 1
    d = np.zeros(npo)
    d[host.pair_orbits.ravel()] = host.min_image_distance.ravel()
    return d


def pair_distances(X: np.ndarray, n_types: int, orbit_distance: np.ndarray, k: int = 3) -> np.ndarray:
    """The ``k`` shortest pair distances (A) of each unordered defect-type pair, read off cluster counts.

    ``X (N, T + T^2 n_pair_orbits)`` (:func:`cluster_counts`), ``orbit_distance (n_pair_orbits,)``
    (:func:`orbit_distances`) -> ``(N, T (T + 1) / 2 * k)``: for type pairs ``(a, b), a <= b`` in order,
    the ``k`` shortest distances between a defect of type a and one of type b, ascending, with
    multiplicity; :data:`ABSENT_DISTANCE` where there are fewer pairs. A function of the counts, so
    exactly invariant like them; it lets trees split on "a V_S within 4 A of the V_Mo" in one cut where
    the counts need one cut per pair orbit.
    """
    X = np.asarray(X, dtype=np.float64)
    T, npo = n_types, len(orbit_distance)
    P = X[:, T : T + T * T * npo].reshape(len(X), T, T, npo)
    order = np.argsort(orbit_distance, kind="stable")
    ds = np.asarray(orbit_distance, dtype=np.float64)[order]
    out = []
    for a in range(T):
        for b in range(a, T):
            c = np.cumsum(P[:, a, b, order], axis=1)  # ordered pairs: a same-type pair is counted twice
            for q in range(k):
                need = 2 * q + 1 if a == b else q + 1
                hit = c >= need - 1e-9
                out.append(np.where(hit[:, -1], ds[np.argmax(hit, axis=1)], ABSENT_DISTANCE))
    return np.stack(out, axis=1) if out else np.zeros((len(X), 0))


def anchor_neighbours(X: np.ndarray, n_types: int, orbit_distance: np.ndarray, anchor: int, k: int = 2) -> np.ndarray:
    """The ``k`` shortest pairs that involve a defect of type ``anchor``, jointly over the partner's type.

    ``X (N, T + T^2 n_pair_orbits)`` (:func:`cluster_counts`), ``orbit_distance (n_pair_orbits,)``
    (:func:`orbit_distances`) -> ``(N, k + k T)``: the ``k`` shortest distances (A, ascending, with
    multiplicity) between an anchor-type defect and any other defect, then per neighbour the one-hot type
    of the partner (ties at one distance ordered by type). :data:`ABSENT_DISTANCE` and zeros where there
    are fewer pairs. With one anchor defect these are its ``k`` nearest neighbours: the three-body
    environment that picks a V_Mo's in-gap level (the shells of the two other defects jointly), one or two
    tree cuts where the counts need one per pair orbit and partner type. A function of the counts, so
    exactly invariant like them.
    """
    X = np.asarray(X, dtype=np.float64)
    T, npo = n_types, len(orbit_distance)
    P = X[:, T : T + T * T * npo].reshape(len(X), T, T, npo)[:, anchor].copy()  # (N, T, npo) ordered pairs (anchor, b)
    P[:, anchor] *= 0.5  # a same-type pair appears twice among ordered pairs
    od = np.round(np.asarray(orbit_distance, dtype=np.float64), 6)  # orbits at one distance tie exactly
    order = np.lexsort((np.repeat(np.arange(T), npo), np.tile(od, T)))  # all (type, orbit) slots by distance, then type
    slot_d, slot_t = np.tile(od, T)[order], np.repeat(np.arange(T), npo)[order]
    c = np.cumsum(P.reshape(len(X), T * npo)[:, order], axis=1)  # (N, T npo)
    out = np.zeros((len(X), k + k * T))
    for q in range(k):
        hit = c >= q + 1 - 1e-9
        has = hit[:, -1]
        j = np.argmax(hit, axis=1)
        out[:, q] = np.where(has, slot_d[j], ABSENT_DISTANCE)
        out[np.flatnonzero(has), k + q * T + slot_t[j[has]]] = 1.0
    return out
